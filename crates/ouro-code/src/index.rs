//! Indexing the history an import or a new mirror brings: every commit reachable from the new
//! repository's refs becomes part of a `code.pushed` event, as if the history had been pushed,
//! so Plan links the items its messages name and later phases see where each commit came from.
//!
//! Unlike a push, whose events list at most [`MAX_COMMITS_PER_EVENT`] commits, an import
//! lists every commit: a ref with more is split into parts (`"part"`, `"parts"`), each its own
//! `code.pushed` with `"imported": true`. A commit reachable from several refs is listed once,
//! under the first ref (refs in name order, the default branch first).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent};
use serde_json::json;

use crate::git::{self, GitError, ZERO_ID};
use crate::push::{CommitInfo, MAX_COMMITS_PER_EVENT, commit_info};

/// One ref of an imported repository with the commits it brought (oldest first).
#[derive(Debug, Clone)]
pub struct IndexedRef {
    pub refname: String,
    pub id: String,
    pub commits: Vec<CommitInfo>,
}

/// Reads the history of the repository at `dir`: its refs, and every commit once.
pub async fn history(dir: &Path, default_branch: &str) -> Result<Vec<IndexedRef>, GitError> {
    let refs: BTreeMap<String, String> = git::refs(dir).await?;
    let head = format!("refs/heads/{default_branch}");
    let mut order: Vec<(&String, &String)> = refs.iter().filter(|(n, _)| **n == head).collect();
    order.extend(refs.iter().filter(|(n, _)| **n != head));
    let mut known: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (name, id) in order {
        // A ref at a commit already listed (most lightweight tags) brings nothing: no rev-list.
        let ids = if seen.contains(id) {
            Vec::new()
        } else {
            git::new_commits(dir, id, &known).await?
        };
        known.push(id.clone());
        seen.extend(ids.iter().cloned());
        listed.push((name.clone(), id.clone(), ids));
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let repo = gix::open(&dir).map_err(|e| read_failed(e.to_string()))?;
        listed
            .into_iter()
            .map(|(refname, id, ids)| {
                let commits = ids
                    .iter()
                    .map(|c| commit_info(&repo, c))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(read_failed)?;
                Ok(IndexedRef {
                    refname,
                    id,
                    commits,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| read_failed(e.to_string()))?
}

fn read_failed(message: String) -> GitError {
    GitError {
        what: "read commits".into(),
        message,
    }
}

/// The `code.pushed` events of an imported history (see the module notes).
pub fn events(
    repo_id: i64,
    repo_name: &str,
    project: (i64, &str),
    actor: &Actor,
    refs: Vec<IndexedRef>,
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    for r in refs {
        let total = r.commits.len();
        let parts = total.div_ceil(MAX_COMMITS_PER_EVENT).max(1);
        let mut chunks: Vec<Vec<CommitInfo>> = r
            .commits
            .chunks(MAX_COMMITS_PER_EVENT)
            .map(|c| c.to_vec())
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for (i, commits) in chunks.into_iter().enumerate() {
            out.push(
                NewEvent::new(
                    ev::CODE_PUSHED,
                    actor,
                    repo_id,
                    json!({
                        "repo": repo_name,
                        "ref": r.refname,
                        "old": ZERO_ID,
                        "new": r.id,
                        "created": true,
                        "deleted": false,
                        "imported": true,
                        "part": i + 1,
                        "parts": parts,
                        "commits": commits,
                        "commits_total": total,
                        "truncated": false,
                    }),
                )
                .in_project(project.0, project.1),
            );
        }
    }
    out
}
