//! What a push changed. The server takes [`lock`] for the repository, snapshots its refs with
//! [`crate::git::refs`], lets `git receive-pack` run, snapshots again and calls [`record`], which
//! appends one `code.pushed` event per ref that moved, with the commits new to the repository.
//! A ref that did not move gets no event; the per-repository lock makes the two snapshots
//! belong to one push.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Store, StoreError};
use serde::Serialize;
use serde_json::json;

use crate::git::{self, ZERO_ID};
use crate::repos::Repo;

/// At most this many commits are listed in one `code.pushed` event (`commits_total` has the
/// full count and `truncated` says some were left out).
pub const MAX_COMMITS_PER_EVENT: usize = 1000;
/// At most this many changed paths are listed per commit (`files_changed` has the count).
pub const MAX_FILES_PER_COMMIT: usize = 100;

type Locks = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;

/// The lock that serialises pushes to the repository at `dir` (one process).
pub fn lock(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(dir.to_path_buf()).or_default().clone()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// RFC 3339.
    pub time: String,
}

/// One commit as `code.pushed` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub message: String,
    pub author: Person,
    pub committer: Person,
    /// The committer time (RFC 3339).
    pub time: String,
    pub parents: Vec<String>,
    /// How many paths differ from the first parent (from the empty tree for a root commit).
    pub files_changed: usize,
    /// Those paths, at most [`MAX_FILES_PER_COMMIT`].
    pub files: Vec<String>,
}

/// One moved ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefUpdate {
    #[serde(rename = "ref")]
    pub refname: String,
    pub old: String,
    pub new: String,
}

/// The refs whose value differs between two snapshots (created, moved or deleted).
pub fn moved(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<RefUpdate> {
    let mut out = Vec::new();
    for (name, new) in after {
        match before.get(name) {
            Some(old) if old == new => {}
            old => out.push(RefUpdate {
                refname: name.clone(),
                old: old.cloned().unwrap_or_else(|| ZERO_ID.into()),
                new: new.clone(),
            }),
        }
    }
    for (name, old) in before {
        if !after.contains_key(name) {
            out.push(RefUpdate {
                refname: name.clone(),
                old: old.clone(),
                new: ZERO_ID.into(),
            });
        }
    }
    out
}

fn failed(msg: String) -> StoreError {
    OuroError::new(ErrorCode::GitFailed, "reading the pushed commits failed")
        .with_details(json!({"git": msg}))
        .into()
}

fn person(s: gix::actor::SignatureRef<'_>) -> Person {
    let s = s.trim();
    let ms = s.time().map(|t| t.seconds * 1000).unwrap_or(0);
    Person {
        name: s.name.to_string(),
        email: s.email.to_string(),
        time: ouro_core::time::rfc3339(ms),
    }
}

type Entries = BTreeMap<Vec<u8>, (bool, gix::ObjectId)>;

fn entries(repo: &gix::Repository, tree: Option<gix::ObjectId>) -> Result<Entries, String> {
    let Some(id) = tree else {
        return Ok(BTreeMap::new());
    };
    let tree = repo.find_tree(id).map_err(|e| e.to_string())?;
    let decoded = tree.decode().map_err(|e| e.to_string())?;
    Ok(decoded
        .entries
        .iter()
        .map(|e| (e.filename.to_vec(), (e.mode.is_tree(), e.oid.to_owned())))
        .collect())
}

/// Paths (files, recursively) that differ between two trees.
fn changed_paths(
    repo: &gix::Repository,
    a: Option<gix::ObjectId>,
    b: Option<gix::ObjectId>,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), String> {
    if a == b {
        return Ok(());
    }
    let (ea, eb) = (entries(repo, a)?, entries(repo, b)?);
    let mut names: Vec<&Vec<u8>> = ea.keys().chain(eb.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (x, y) = (ea.get(name), eb.get(name));
        if x == y {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let sub = |e: Option<&(bool, gix::ObjectId)>| e.filter(|e| e.0).map(|e| e.1);
        let (ta, tb) = (sub(x), sub(y));
        if ta.is_some() || tb.is_some() {
            changed_paths(repo, ta, tb, &format!("{path}/"), out)?;
        }
        // A file on either side (a file replaced by a directory counts as that file changing).
        let file = |e: Option<&(bool, gix::ObjectId)>| e.is_some_and(|e| !e.0);
        if file(x) || file(y) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads one commit with gix.
pub fn commit_info(repo: &gix::Repository, id: &str) -> Result<CommitInfo, String> {
    let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| e.to_string())?;
    let c = repo.find_commit(oid).map_err(|e| e.to_string())?;
    let author = person(c.author().map_err(|e| e.to_string())?);
    let committer = person(c.committer().map_err(|e| e.to_string())?);
    let message = c.message_raw_sloppy().to_string();
    let parents: Vec<gix::ObjectId> = c.parent_ids().map(|p| p.detach()).collect();
    let tree = c.tree_id().map_err(|e| e.to_string())?.detach();
    let parent_tree = match parents.first() {
        Some(p) => Some(
            repo.find_commit(*p)
                .map_err(|e| e.to_string())?
                .tree_id()
                .map_err(|e| e.to_string())?
                .detach(),
        ),
        None => None,
    };
    let mut files = Vec::new();
    changed_paths(repo, parent_tree, Some(tree), "", &mut files)?;
    let files_changed = files.len();
    files.truncate(MAX_FILES_PER_COMMIT);
    Ok(CommitInfo {
        id: id.to_string(),
        message,
        time: committer.time.clone(),
        author,
        committer,
        parents: parents.iter().map(|p| p.to_string()).collect(),
        files_changed,
        files,
    })
}

/// The commits `tip` brings that none of `known` reaches, oldest first: walked with gix (no
/// process on the push's path), with `git rev-list` as the fallback when gix cannot walk.
async fn new_commits(dir: &Path, tip: &str, known: &[String]) -> Result<Vec<String>, StoreError> {
    let (d, t, k) = (dir.to_path_buf(), tip.to_string(), known.to_vec());
    let walked = tokio::task::spawn_blocking(move || {
        let repo = gix::open(&d).map_err(|e| e.to_string())?;
        git::new_commits_gix(&repo, &t, &k).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| failed(e.to_string()))?;
    match walked {
        Ok(ids) => Ok(ids),
        Err(e) => {
            tracing::warn!(error = %e, "walking the pushed commits with gix failed; asking git");
            git::new_commits(dir, tip, known)
                .await
                .map_err(|e| failed(e.to_string()))
        }
    }
}

/// Appends one `code.pushed` per moved ref between `before` and `after` (in one transaction),
/// each with the commits that the ref brought and that no ref held before the push.
/// Returns the number of events appended.
pub async fn record(
    store: &Store,
    dir: &Path,
    repo: &Repo,
    project_slug: &str,
    actor: &Actor,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Result<usize, StoreError> {
    let updates = moved(before, after);
    if updates.is_empty() {
        return Ok(0);
    }
    let mut known: Vec<String> = {
        let mut v: Vec<String> = before.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    };
    let mut events = Vec::new();
    for u in &updates {
        let ids = if u.new == ZERO_ID {
            Vec::new()
        } else {
            new_commits(dir, &u.new, &known).await?
        };
        // A commit two refs brought in one push is listed once, under the first.
        if u.new != ZERO_ID {
            known.push(u.new.clone());
        }
        let total = ids.len();
        let listed: Vec<String> = ids.into_iter().take(MAX_COMMITS_PER_EVENT).collect();
        let dir = dir.to_path_buf();
        let commits = tokio::task::spawn_blocking(move || {
            let repo = gix::open(&dir).map_err(|e| e.to_string())?;
            listed
                .iter()
                .map(|id| commit_info(&repo, id))
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
        events.push(
            NewEvent::new(
                ev::CODE_PUSHED,
                actor,
                repo.id,
                json!({
                    "repo": repo.name,
                    "ref": u.refname,
                    "old": u.old,
                    "new": u.new,
                    "created": u.old == ZERO_ID,
                    "deleted": u.new == ZERO_ID,
                    "commits": commits,
                    "commits_total": total,
                    "truncated": total > MAX_COMMITS_PER_EVENT,
                }),
            )
            .in_project(repo.project_id, project_slug),
        );
    }
    let n = events.len();
    let mut tx = store.begin().await?;
    for e in events {
        tx.append(e).await?;
    }
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_moved_refs_count() {
        let before = refs(&[
            ("refs/heads/main", "a"),
            ("refs/heads/old", "b"),
            ("refs/tags/t", "c"),
        ]);
        let after = refs(&[
            ("refs/heads/main", "d"),
            ("refs/heads/new", "e"),
            ("refs/tags/t", "c"),
        ]);
        let m = moved(&before, &after);
        let got: Vec<(&str, &str, &str)> = m
            .iter()
            .map(|u| (u.refname.as_str(), u.old.as_str(), u.new.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("refs/heads/main", "a", "d"),
                ("refs/heads/new", ZERO_ID, "e"),
                ("refs/heads/old", "b", ZERO_ID),
            ]
        );
        assert!(moved(&after, &after).is_empty());
    }
}
