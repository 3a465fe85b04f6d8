//! Small bounded caches for the claim and the worker, so a run's jobs do not each read the
//! pipeline file from git, parse it and plan the whole run again:
//!
//! - [`file_at`]: a pipeline file's text at a commit, keyed by (repository directory, commit,
//!   path) — the text at a commit never changes.
//! - [`parsed`]: a pipeline file parsed, keyed by (path, text).
//! - [`planned`]: a run's plan, keyed by everything the planner reads (pipeline name, path, text,
//!   trigger): the same inputs give the same plan, so the result is identical to planning again.
//!
//! Each is a least-recently-used list of a few dozen entries (a lookup compares keys linearly:
//! cheaper than any hashing at this size). Failures (a file that cannot be read) are not cached.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::pipeline::Pipeline;
use crate::plan::{RunPlan, Trigger};

/// A bounded least-recently-used map with linear lookup.
pub struct Lru<K, V> {
    cap: usize,
    items: Mutex<VecDeque<(K, Arc<V>)>>,
}

impl<K: PartialEq, V> Lru<K, V> {
    pub const fn new(cap: usize) -> Self {
        Lru {
            cap,
            items: Mutex::new(VecDeque::new()),
        }
    }

    /// The value for `key`, now the most recently used.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let i = items.iter().position(|(k, _)| k == key)?;
        let item = items.remove(i)?;
        let v = item.1.clone();
        items.push_front(item);
        Some(v)
    }

    /// Stores `value` for `key` (evicting the least recently used beyond the capacity) and
    /// returns it.
    pub fn insert(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = items.iter().position(|(k, _)| *k == key) {
            items.remove(i);
        }
        items.push_front((key, value.clone()));
        items.truncate(self.cap.max(1));
        value
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type FileKey = (PathBuf, String, String);

static FILES: Lru<FileKey, String> = Lru::new(32);

/// `file` at `sha` in the bare repository `dir` (UTF-8), read with `git cat-file` once.
pub async fn file_at(dir: &Path, sha: &str, file: &str) -> Result<Arc<String>, String> {
    let key = (dir.to_path_buf(), sha.to_string(), file.to_string());
    if let Some(text) = FILES.get(&key) {
        return Ok(text);
    }
    let d = dir.to_string_lossy();
    let spec = format!("{sha}:{file}");
    let out = ouro_code::git::command(&["-C", &d, "cat-file", "blob", &spec])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8(out.stdout).map_err(|_| format!("{file} is not valid UTF-8"))?;
    Ok(FILES.insert(key, text))
}

/// A parsed pipeline file, or how many problems it has.
pub type Parsed = Result<Pipeline, usize>;

static PARSED: Lru<(String, String), Parsed> = Lru::new(32);

/// `text` (the file `file`) parsed ([`crate::pipeline::parse`]).
pub fn parsed(file: &str, text: &str) -> Arc<Parsed> {
    let key = (file.to_string(), text.to_string());
    if let Some(p) = PARSED.get(&key) {
        return p;
    }
    let p = crate::pipeline::parse(file, text.as_bytes()).map_err(|d| d.len());
    PARSED.insert(key, p)
}

/// What a plan depends on: the pipeline's name, the file's path and text, the trigger.
#[derive(PartialEq)]
struct PlanKey {
    name: String,
    file: String,
    text: String,
    trigger: Trigger,
}

static PLANS: Lru<PlanKey, Result<RunPlan, String>> = Lru::new(32);

/// The plan of `pipeline` (parsed from `text`, the file `file`) for `trigger`
/// ([`crate::plan::plan_jobs`]: the run exists, so no `on:` check), or the planner's message.
pub fn planned(
    name: &str,
    file: &str,
    text: &str,
    pipeline: &Pipeline,
    trigger: &Trigger,
) -> Arc<Result<RunPlan, String>> {
    let key = PlanKey {
        name: name.to_string(),
        file: file.to_string(),
        text: text.to_string(),
        trigger: trigger.clone(),
    };
    if let Some(p) = PLANS.get(&key) {
        return p;
    }
    let p = crate::plan::plan_jobs(name, pipeline, trigger).map_err(|e| e.to_string());
    PLANS.insert(key, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lru_keeps_the_most_recently_used_within_its_capacity() {
        let lru: Lru<u32, &str> = Lru::new(2);
        lru.insert(1, "one");
        lru.insert(2, "two");
        assert_eq!(lru.get(&1).as_deref(), Some(&"one")); // 1 is now the most recent
        lru.insert(3, "three"); // evicts 2
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.get(&1).as_deref(), Some(&"one"));
        assert_eq!(lru.get(&3).as_deref(), Some(&"three"));
        assert_eq!(lru.len(), 2);
        lru.insert(3, "drei");
        assert_eq!(lru.get(&3).as_deref(), Some(&"drei"));
        assert_eq!(lru.len(), 2);
    }

    const TEXT: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    steps:\n      - run: x\n  test:\n    needs: build\n    steps:\n      - run: y\n";

    fn trigger(run_number: u64) -> Trigger {
        Trigger {
            event: crate::plan::EventKind::Push,
            git_ref: "refs/heads/main".into(),
            branch: Some("main".into()),
            tag: None,
            target_branch: None,
            sha: "0".repeat(40),
            changed_paths: None,
            inputs: Default::default(),
            actor: "user:alice".into(),
            project: "demo".into(),
            repo: "app".into(),
            run_number,
        }
    }

    /// The cached plan is the planner's own result, and a different input is planned anew.
    #[test]
    fn a_cached_plan_equals_planning_again() {
        let parsed = parsed("ci.yml", TEXT);
        let p = parsed.as_ref().as_ref().expect("valid");
        let fresh = crate::plan::plan_jobs("ci", p, &trigger(1)).expect("planned");
        let a = planned("ci", "ci.yml", TEXT, p, &trigger(1));
        let b = planned("ci", "ci.yml", TEXT, p, &trigger(1));
        assert!(Arc::ptr_eq(&a, &b), "the second lookup hits the cache");
        let a = a.as_ref().as_ref().expect("planned");
        let ids = |rp: &RunPlan| rp.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(a), ids(&fresh));
        assert_eq!(format!("{a:?}"), format!("{fresh:?}"));
        let other = planned("ci", "ci.yml", TEXT, p, &trigger(2));
        assert!(!Arc::ptr_eq(&other, &b));
        // A tag push does not match `branches: [main]`, but the run exists: the jobs are
        // planned all the same (the `on:` filter was applied when the run was created).
        let mut tag = trigger(3);
        tag.git_ref = "refs/tags/v1".into();
        tag.branch = None;
        tag.tag = Some("v1".into());
        assert!(crate::plan::plan("ci", p, &tag).is_err());
        let e = planned("ci", "ci.yml", TEXT, p, &tag);
        assert_eq!(ids(e.as_ref().as_ref().expect("planned")), ids(&fresh));
        // An invalid file: the number of problems.
        assert!(matches!(*super::parsed("ci.yml", "jobs: 3\n"), Err(n) if n > 0));
    }
}
