//! Links: between two items of one project (`blocks`, `relates`, `duplicates`) and from an item
//! to a ledger subject (a commit, a change request, ...). Every change appends `item.linked` in
//! the same transaction; an unlink carries `"removed": true`.
//!
//! A link is stored once, from the side that created it. `relates` is symmetric, so a listing
//! shows it as `relates` from both sides; `blocks` and `duplicates` read as "blocked by" and
//! "duplicated by" from the target's side.

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Row, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::items::{self, Item};

pub const KINDS: [&str; 3] = ["blocks", "relates", "duplicates"];
pub const MAX_SUBJECT_TYPE: usize = 50;
pub const MAX_SUBJECT_ID: usize = 200;
pub const MAX_SUBJECT_TITLE: usize = 300;
pub const MAX_URL: usize = 2_000;

/// An item link as seen from one item: `label` is how it reads from that side.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ItemLink {
    pub id: i64,
    /// The stored kind: `blocks`, `relates` or `duplicates`.
    pub kind: String,
    /// `blocks`, `blocked by`, `relates`, `duplicates` or `duplicated by`.
    pub label: String,
    /// False when the other item created the link (the link points at this one).
    pub outgoing: bool,
    pub key: String,
    pub title: String,
    pub state: String,
    pub created_at: i64,
}

/// A ledger subject linked to an item.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SubjectLink {
    pub id: i64,
    #[serde(rename = "type")]
    pub subject_type: String,
    pub subject_id: String,
    pub title: String,
    pub url: Option<String>,
    /// The event the link was found in, when a consumer created it.
    pub source_event_seq: Option<i64>,
    pub created_at: i64,
}

/// A subject to link to an item.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct NewSubject {
    #[serde(rename = "type")]
    pub subject_type: String,
    pub id: String,
    pub title: String,
    pub url: Option<String>,
}

fn invalid(message: impl Into<String>) -> OuroError {
    OuroError::new(ErrorCode::ValidationFailed, message)
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), OuroError> {
    if s.contains('\0') {
        return Err(OuroError::field(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    if s.chars().count() > max {
        return Err(OuroError::field(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

async fn item_or_404(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<Item, StoreError> {
    Ok(items::get(ex, project_id, key)
        .await?
        .ok_or_else(|| items::not_found(key))?)
}

/// Links `from` to the item `to` with `kind`. Both keys are looked up in `project`, so a key of
/// another project is simply unknown there (404); a key naming another project's prefix gets a
/// 422 that says links stay inside one project.
pub async fn link(
    store: &Store,
    project: &Project,
    actor: &Actor,
    from: &str,
    kind: &str,
    to: &str,
) -> Result<ItemLink, StoreError> {
    let mut tx = store.begin().await?;
    let link = link_in(&mut tx, project, actor, from, kind, to).await?;
    tx.commit().await?;
    Ok(link)
}

/// [`link`] inside the caller's transaction.
pub async fn link_in(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    from: &str,
    kind: &str,
    to: &str,
) -> Result<ItemLink, StoreError> {
    if !KINDS.contains(&kind) {
        return Err(
            OuroError::field("kind", format!("kind must be one of {}", KINDS.join(", "))).into(),
        );
    }
    let src = item_or_404(&mut *tx, project.id, from).await?;
    let Some(dst) = items::get(&mut *tx, project.id, to).await? else {
        // A key with another project's prefix: say why rather than only "not found".
        let prefix = src.key.rsplit_once('-').map(|(p, _)| p).unwrap_or("");
        let other = to.trim().to_ascii_uppercase();
        if let Some((p, n)) = other.rsplit_once('-')
            && p != prefix
            && !p.is_empty()
            && n.parse::<u64>().is_ok()
        {
            return Err(invalid(format!(
                "{other} is not in this project; links join items of one project"
            ))
            .into());
        }
        return Err(items::not_found(to).into());
    };
    if src.id == dst.id {
        return Err(invalid("an item cannot be linked to itself").into());
    }
    // `relates` is symmetric: the reverse row counts as the same link.
    if kind == "relates" {
        let rev = q("SELECT id FROM item_links WHERE from_item_id = $1 AND kind = 'relates' AND to_item_id = $2")
            .bind(dst.id)
            .bind(src.id)
            .fetch_optional(&mut *tx)
            .await?;
        if rev.is_some() {
            return Err(
                OuroError::new(ErrorCode::LinkExists, "these items are already related").into(),
            );
        }
    }
    let now = ouro_core::time::now_ms();
    let row = q("INSERT INTO item_links (project_id, from_item_id, kind, to_item_id, created_by, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id")
        .bind(project.id)
        .bind(src.id)
        .bind(kind)
        .bind(dst.id)
        .bind(actor.user_id())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(OuroError::new(
            ErrorCode::LinkExists,
            format!("{} already {kind} {}", src.key, dst.key),
        )
        .into());
    };
    let id = row.i64("id")?;
    tx.append(
        NewEvent::new(
            ev::ITEM_LINKED,
            actor,
            src.id,
            json!({"key": src.key, "link": kind, "to": dst.key}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(ItemLink {
        id,
        kind: kind.into(),
        label: kind.into(),
        outgoing: true,
        key: dst.key,
        title: dst.title,
        state: dst.state,
        created_at: now,
    })
}

/// Removes the link `id` if it touches the item `key` (from either side).
pub async fn unlink(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    id: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let item = item_or_404(&mut tx, project.id, key).await?;
    let row = q(
        "SELECT l.kind, f.key AS from_key, t.key AS to_key FROM item_links l \
        JOIN items f ON f.id = l.from_item_id JOIN items t ON t.id = l.to_item_id \
        WHERE l.id = $1 AND l.project_id = $2 AND (l.from_item_id = $3 OR l.to_item_id = $3)",
    )
    .bind(id)
    .bind(project.id)
    .bind(item.id)
    .fetch_optional(&mut tx)
    .await?;
    let Some(row) = row else {
        return Err(OuroError::new(
            ErrorCode::LinkNotFound,
            format!("link {id} does not exist on {}", item.key),
        )
        .into());
    };
    q("DELETE FROM item_links WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_LINKED,
            actor,
            item.id,
            json!({"key": row.text("from_key")?, "link": row.text("kind")?, "to": row.text("to_key")?, "removed": true}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn label(kind: &str, outgoing: bool) -> String {
    match (kind, outgoing) {
        ("blocks", false) => "blocked by".into(),
        ("duplicates", false) => "duplicated by".into(),
        (k, _) => k.into(),
    }
}

/// The links of item `item_id`, both directions, oldest first.
pub async fn list(ex: &mut impl Executor, item_id: i64) -> Result<Vec<ItemLink>, StoreError> {
    let rows = q(
        "SELECT l.id, l.kind, l.created_at, l.from_item_id, o.key, o.title, o.state \
        FROM item_links l JOIN items o \
        ON o.id = CASE WHEN l.from_item_id = $1 THEN l.to_item_id ELSE l.from_item_id END \
        WHERE l.from_item_id = $1 OR l.to_item_id = $1 ORDER BY l.id",
    )
    .bind(item_id)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r: &Row| {
            let kind = r.text("kind")?;
            let outgoing = r.i64("from_item_id")? == item_id;
            Ok(ItemLink {
                id: r.i64("id")?,
                label: label(&kind, outgoing),
                kind,
                outgoing,
                key: r.text("key")?,
                title: r.text("title")?,
                state: r.text("state")?,
                created_at: r.i64("created_at")?,
            })
        })
        .collect()
}

/// Links a ledger subject to item `key`. Linking the same subject again changes nothing and
/// returns `None` (no event either), so a consumer that sees an event twice is harmless.
pub async fn link_subject(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    subject: &NewSubject,
    source_event_seq: Option<i64>,
) -> Result<Option<SubjectLink>, StoreError> {
    check_text("type", &subject.subject_type, MAX_SUBJECT_TYPE)?;
    check_text("id", &subject.id, MAX_SUBJECT_ID)?;
    check_text("title", &subject.title, MAX_SUBJECT_TITLE)?;
    if let Some(u) = &subject.url {
        check_text("url", u, MAX_URL)?;
    }
    if subject.subject_type.trim().is_empty() || subject.id.trim().is_empty() {
        return Err(invalid("a subject needs a type and an id").into());
    }
    let mut tx = store.begin().await?;
    let item = item_or_404(&mut tx, project.id, key).await?;
    let now = ouro_core::time::now_ms();
    let row = q("INSERT INTO item_subject_links \
        (item_id, subject_type, subject_id, title, url, source_event_seq, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id")
    .bind(item.id)
    .bind(subject.subject_type.as_str())
    .bind(subject.id.as_str())
    .bind(subject.title.as_str())
    .bind(subject.url.clone())
    .bind(source_event_seq)
    .bind(now)
    .fetch_optional(&mut tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    tx.append(
        NewEvent::new(
            ev::ITEM_LINKED,
            actor,
            item.id,
            json!({"key": item.key, "subject": {"type": subject.subject_type, "id": subject.id}}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(SubjectLink {
        id: row.i64("id")?,
        subject_type: subject.subject_type.clone(),
        subject_id: subject.id.clone(),
        title: subject.title.clone(),
        url: subject.url.clone(),
        source_event_seq,
        created_at: now,
    }))
}

/// The subjects linked to item `item_id`, oldest first.
pub async fn list_subjects(
    ex: &mut impl Executor,
    item_id: i64,
) -> Result<Vec<SubjectLink>, StoreError> {
    let rows = q(
        "SELECT id, subject_type, subject_id, title, url, source_event_seq, created_at \
        FROM item_subject_links WHERE item_id = $1 ORDER BY id",
    )
    .bind(item_id)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r: &Row| {
            Ok(SubjectLink {
                id: r.i64("id")?,
                subject_type: r.text("subject_type")?,
                subject_id: r.text("subject_id")?,
                title: r.text("title")?,
                url: r.opt_text("url")?,
                source_event_seq: r.opt_i64("source_event_seq")?,
                created_at: r.i64("created_at")?,
            })
        })
        .collect()
}

/// For events of the later stages of the loop: the subject to link and the upstream subjects
/// (type, id) it came from. Payload fields read (documented in docs/plan.md, "Trail"):
///
/// - `pipeline.*` (subject `pipeline_run`): `commit` or `sha` (a SHA) and/or `change_request`
///   (an id), `name?`, `url?`;
/// - `release.*` (subject `release`): `version`, `commits: [SHA]` and/or `sha`,
///   `pipelines: [id]`, `url?`;
/// - `deployment.*` (subject `deployment`): `release` (an id), `environment`, `version?`, `url?`.
pub fn chain(event: &ouro_core::Event) -> Option<(NewSubject, Vec<(&'static str, String)>)> {
    let p = &event.payload;
    let text = |f: &str| p.get(f).and_then(|v| v.as_str()).map(str::to_string);
    let list = |f: &str| -> Vec<String> {
        p.get(f)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = event.subject.id.clone();
    let kind = event.kind.as_str();
    let mut upstream: Vec<(&'static str, String)> = Vec::new();
    let (subject_type, title) = if kind.starts_with("pipeline.") {
        // Build names the commit `sha`.
        upstream.extend(
            text("commit")
                .or_else(|| text("sha"))
                .map(|c| ("commit", c)),
        );
        upstream.extend(text("change_request").map(|c| ("change_request", c)));
        (
            "pipeline_run",
            text("name").unwrap_or_else(|| format!("Pipeline {id}")),
        )
    } else if kind.starts_with("release.") {
        upstream.extend(list("commits").into_iter().map(|c| ("commit", c)));
        upstream.extend(text("sha").map(|c| ("commit", c)));
        upstream.extend(list("pipelines").into_iter().map(|c| ("pipeline_run", c)));
        (
            "release",
            text("version").unwrap_or_else(|| format!("Release {id}")),
        )
    } else if kind.starts_with("deploy.") {
        upstream.extend(text("release").map(|r| ("release", r)));
        let env = text("environment").unwrap_or_else(|| "?".into());
        let what = text("version").unwrap_or_else(|| format!("Deployment {id}"));
        ("deployment", format!("{what} to {env}"))
    } else {
        return None;
    };
    if upstream.is_empty() {
        return None;
    }
    Some((
        NewSubject {
            subject_type: subject_type.into(),
            id,
            title: first_line(&title),
            url: text("url"),
        },
        upstream,
    ))
}

/// Keys of the items of `project_id` linked to the subject (`subject_type`, `subject_id`).
pub async fn items_linked_to(
    ex: &mut impl Executor,
    project_id: i64,
    subject_type: &str,
    subject_id: &str,
) -> Result<Vec<String>, StoreError> {
    q(
        "SELECT i.key FROM item_subject_links s JOIN items i ON i.id = s.item_id \
       WHERE s.subject_type = $1 AND s.subject_id = $2 AND i.project_id = $3 ORDER BY i.id",
    )
    .bind(subject_type)
    .bind(subject_id)
    .bind(project_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| r.text("key"))
    .collect()
}

/// The consumer that links items to the ledger subjects whose text mentions them.
pub const REFERENCES_CONSUMER: &str = "plan-references";

/// Reads events of a project whose payload carries text and links every mentioned item key that
/// exists in that project. The payload fields it reads (the Code phase will emit them):
///
/// - `code.pushed`: `commits: [{"id": SHA, "message": TEXT, "url": URL?}]`; one `commit` subject
///   per commit, titled with the message's first line.
/// - `cr.opened` / `cr.updated`: `title`, `description`, `url?`; one `change_request` subject
///   whose id is the event's subject id.
///
/// Linking is idempotent (UNIQUE + ON CONFLICT DO NOTHING), so a redelivered event adds nothing.
pub struct References;

impl ouro_store::consumers::Consumer for References {
    fn name(&self) -> &'static str {
        REFERENCES_CONSUMER
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a ouro_core::Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move { references(store, event).await.map_err(OuroError::from) })
    }
}

fn str_field<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v.get(field).and_then(|s| s.as_str()).unwrap_or("")
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(MAX_SUBJECT_TITLE)
        .collect()
}

async fn references(store: &Store, event: &ouro_core::Event) -> Result<(), StoreError> {
    // (subject, text to scan)
    let mut found: Vec<(NewSubject, String)> = Vec::new();
    let url = |v: &serde_json::Value| v.get("url").and_then(|u| u.as_str()).map(String::from);
    match event.kind.as_str() {
        k if k == ev::CODE_PUSHED.name => {
            let commits = event.payload.get("commits").and_then(|c| c.as_array());
            for c in commits.into_iter().flatten() {
                let (id, message) = (str_field(c, "id"), str_field(c, "message"));
                found.push((
                    NewSubject {
                        subject_type: "commit".into(),
                        id: id.into(),
                        title: first_line(message),
                        url: url(c),
                    },
                    message.into(),
                ));
            }
        }
        k if k == ev::CR_OPENED.name || k == ev::CR_UPDATED.name => {
            let p = &event.payload;
            let title = str_field(p, "title");
            found.push((
                NewSubject {
                    subject_type: "change_request".into(),
                    id: event.subject.id.clone(),
                    title: first_line(title),
                    url: url(p),
                },
                format!("{title}\n{}", str_field(p, "description")),
            ));
        }
        k if k == ev::INCIDENT_OPENED.name => {
            let p = &event.payload;
            let title = str_field(p, "title");
            found.push((
                NewSubject {
                    subject_type: "incident".into(),
                    id: event.subject.id.clone(),
                    title: first_line(title),
                    url: url(p),
                },
                format!("{title}\n{}", str_field(p, "description")),
            ));
        }
        _ => {}
    }
    let Some(slug) = event.project.as_deref() else {
        return Ok(());
    };
    let chained = chain(event);
    if found.is_empty() && chained.is_none() {
        return Ok(());
    }
    let Some(project) = ouro_store::projects::by_slug(&mut store.read().await?, slug).await? else {
        return Ok(());
    };
    let actor = Actor::System(REFERENCES_CONSUMER);
    if let Some((subject, upstream)) = chained {
        // The items already linked to what this subject was built from get it too.
        let mut keys = Vec::new();
        for (t, id) in &upstream {
            keys.extend(items_linked_to(&mut store.read().await?, project.id, t, id).await?);
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            match link_subject(store, &project, &actor, &key, &subject, Some(event.seq)).await {
                Ok(_) | Err(StoreError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (subject, text) in found {
        let mut keys: Vec<String> = ouro_core::refs::parse(&text)
            .into_iter()
            .map(|r| r.key)
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            match link_subject(store, &project, &actor, &key, &subject, Some(event.seq)).await {
                Ok(_) => {}
                // Unknown keys (and other projects' keys) and malformed subjects are skipped:
                // retrying would never succeed and would stall the consumer.
                Err(StoreError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chain;
    use serde_json::json;

    fn event(kind: &str, subject: &str, payload: serde_json::Value) -> ouro_core::Event {
        ouro_core::Event {
            seq: 1,
            time: 0,
            project: Some("demo".into()),
            project_id: None,
            actor: "system:test".into(),
            kind: kind.into(),
            schema_version: 1,
            subject: ouro_core::events::Subject {
                kind: subject.into(),
                id: "7".into(),
            },
            payload,
        }
    }

    /// The payloads Build and Release really emit (`sha`, `commits`, `pipelines`) chain to their
    /// commit and run, so an item's trail reaches its releases and deployments.
    #[test]
    fn build_and_release_payloads_chain_to_their_commits_and_runs() {
        let (subject, up) = chain(&event(
            "pipeline.queued",
            "pipeline_run",
            json!({"number": 3, "sha": "abc"}),
        ))
        .unwrap();
        assert_eq!(subject.subject_type, "pipeline_run");
        assert_eq!(up, vec![("commit", "abc".to_string())]);

        let (subject, up) = chain(&event(
            "release.created",
            "release",
            json!({"version": "1.1.0", "sha": "def", "commits": ["abc", "def"], "pipelines": [12]}),
        ))
        .unwrap();
        assert_eq!(subject.subject_type, "release");
        assert!(up.contains(&("commit", "abc".to_string())), "{up:?}");
        assert!(up.contains(&("commit", "def".to_string())), "{up:?}");
        assert!(up.contains(&("pipeline_run", "12".to_string())), "{up:?}");

        let (subject, up) = chain(&event(
            "deploy.succeeded",
            "deployment",
            json!({"release": "5", "environment": "staging"}),
        ))
        .unwrap();
        assert_eq!(subject.subject_type, "deployment");
        assert_eq!(up, vec![("release", "5".to_string())]);
    }
}
