//! Re-running a finished run: a new run (a new number, trigger `rerun`, the same commit, ref and
//! pipeline file, `rerun_of` = the old number) with the old run's jobs.
//!
//! - `all`: every job is queued again.
//! - `failed`: the jobs that did not succeed, and every job that (transitively) needs one of
//!   them, are queued; the other jobs are copied with their result and marked as reused
//!   (`reused_from` = the old number).
//! - a list of job keys: those jobs, the jobs they need that did not succeed, and every job that
//!   needs any of them are queued; the others are copied as reused.
//!
//! Only a finished run can be re-run (`build.run_not_finished`, 409). The new run keeps the old
//! one's change request number, trust and manual inputs.

use std::collections::BTreeSet;
use std::path::Path;

use ouro_code::repos::Repo;
use ouro_core::{ErrorCode, OuroError};
use ouro_store::{Store, StoreError, q};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::runs::{self, Job, NewJob, RunDetail, TriggerInfo};

/// Which jobs to run again: `"all"`, `"failed"`, or a list of job keys.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Selection {
    /// `all` or `failed`.
    Keyword(String),
    /// Job keys (`build`, `test (linux)`): each with the jobs that need it.
    Jobs(Vec<String>),
}

fn bad(message: impl Into<String>) -> StoreError {
    OuroError::field("jobs", message).into()
}

/// The keys to queue again for `sel` (see the module docs); the others are reused.
pub fn to_queue(jobs: &[Job], sel: &Selection) -> Result<BTreeSet<String>, StoreError> {
    let ok = |j: &Job| j.status == "success";
    let mut seeds: BTreeSet<String> = match sel {
        Selection::Keyword(k) if k == "all" => {
            return Ok(jobs.iter().map(|j| j.key.clone()).collect());
        }
        Selection::Keyword(k) if k == "failed" => jobs
            .iter()
            .filter(|j| !ok(j))
            .map(|j| j.key.clone())
            .collect(),
        Selection::Keyword(k) => {
            return Err(bad(format!(
                "`{k}` is not \"all\", \"failed\" or a list of job keys"
            )));
        }
        Selection::Jobs(keys) => {
            if keys.is_empty() {
                return Err(bad("name at least one job"));
            }
            let mut out = BTreeSet::new();
            for k in keys {
                if !jobs.iter().any(|j| &j.key == k) {
                    return Err(bad(format!("no job `{k}` in this run")));
                }
                out.insert(k.clone());
            }
            // The jobs they need that did not succeed must run too, or they would wait forever.
            let mut changed = true;
            while changed {
                changed = false;
                let wanted: Vec<String> = jobs
                    .iter()
                    .filter(|j| out.contains(&j.key))
                    .flat_map(|j| j.needs.iter())
                    .filter(|n| !out.contains(*n))
                    .filter(|n| jobs.iter().any(|x| &x.key == *n && !ok(x)))
                    .cloned()
                    .collect();
                for n in wanted {
                    changed |= out.insert(n);
                }
            }
            out
        }
    };
    // Plus every job that (transitively) needs one of them.
    let mut changed = true;
    while changed {
        changed = false;
        for j in jobs {
            if !seeds.contains(&j.key) && j.needs.iter().any(|n| seeds.contains(n)) {
                seeds.insert(j.key.clone());
                changed = true;
            }
        }
    }
    if seeds.is_empty() {
        return Err(bad("nothing to re-run: every job succeeded"));
    }
    Ok(seeds)
}

async fn repo_of(store: &Store, run: &runs::Run) -> Result<Repo, StoreError> {
    let gone = || -> StoreError {
        OuroError::new(
            ErrorCode::RepoNotFound,
            format!("the repository {} of this run no longer exists", run.repo),
        )
        .into()
    };
    let repo_id = run.repo_id.ok_or_else(gone)?;
    let mut conn = store.read().await?;
    ouro_code::repos::by_name(&mut conn, run.project_id, &run.repo)
        .await?
        .filter(|r| r.id == repo_id)
        .ok_or_else(gone)
}

/// Re-runs run `number` of the project (see the module docs) as `actor` (a ledger label,
/// `user:alice`). Posts the new run's commit status. Returns the new run with its jobs.
pub async fn rerun(
    store: &Store,
    root: &Path,
    project_id: i64,
    number: i64,
    sel: &Selection,
    actor: &str,
) -> Result<RunDetail, StoreError> {
    let (old, old_jobs) = {
        let mut conn = store.read().await?;
        let old = runs::get(&mut conn, project_id, number).await?;
        let jobs = runs::jobs(&mut conn, old.id).await?;
        (old, jobs)
    };
    if matches!(old.status.as_str(), "queued" | "running") {
        return Err(OuroError::new(
            ErrorCode::RunNotFinished,
            format!(
                "pipeline run #{number} is still {}: cancel it or wait until it finishes",
                old.status
            ),
        )
        .into());
    }
    if old_jobs.is_empty() {
        return Err(OuroError::new(
            ErrorCode::NoPipeline,
            format!(
                "pipeline run #{number} has no jobs (its pipeline file is invalid): push a fix instead"
            ),
        )
        .with_details(serde_json::json!({"field": "jobs"}))
        .into());
    }
    let queue = to_queue(&old_jobs, sel)?;
    let repo = repo_of(store, &old).await?;
    let new_jobs: Vec<NewJob> = old_jobs
        .iter()
        .map(|j| NewJob {
            key: j.key.clone(),
            name: j.name.clone(),
            needs: j.needs.clone(),
            matrix: j.matrix.clone(),
            layer: j.layer,
            group: j.concurrency_group.clone(),
            cancel_in_progress: false,
            labels: j.labels.clone(),
            executor: j.executor.clone(),
            retry_max: j.retry_max,
            retry_when: j.retry_when.clone(),
            after_failure: j.after_failure,
            continue_on_error: j.continue_on_error,
        })
        .collect();
    let trigger = TriggerInfo {
        kind: "rerun",
        git_ref: old.git_ref.clone(),
        sha: old.sha.clone(),
        actor: actor.to_string(),
        cr_number: old.cr_number,
        trusted: old.trusted,
        rerun_of: Some(old.number),
        event: Some(old.event.clone()),
        target_branch: old.target_branch.clone(),
        ..Default::default()
    };
    let mut tx = store.begin().await?;
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut tx)
        .await?
        .text("slug")?;
    let mut run = runs::insert_run(
        &mut tx,
        &slug,
        &repo,
        &trigger,
        &old.file,
        &old.pipeline,
        Ok(new_jobs),
        &old.inputs,
    )
    .await?;
    // The re-run joins its run's pipeline-level group (rendered when that run was created), so
    // it waits for the group's older runs; it cancels nothing (cancel-in-progress is for new
    // pushes, not for someone retrying).
    if let Some(group) = &old.concurrency_group {
        q("UPDATE build_runs SET concurrency_group = $1 WHERE id = $2")
            .bind(group.clone())
            .bind(run.id)
            .execute(&mut tx)
            .await?;
        run.concurrency_group = Some(group.clone());
    }
    for j in old_jobs.iter().filter(|j| !queue.contains(&j.key)) {
        q("UPDATE build_jobs SET status = $1, reused_from = $2, started_at = $3, finished_at = $4, \
           exit_code = $5, reason = $6, version = version + 1 WHERE run_id = $7 AND job_key = $8")
        .bind(j.status.as_str())
        .bind(old.number)
        .bind(j.started_at)
        .bind(j.finished_at)
        .bind(j.exit_code)
        .bind(j.reason.clone())
        .bind(run.id)
        .bind(j.key.as_str())
        .execute(&mut tx)
        .await?;
    }
    let run = runs::rederive(&mut tx, &run, &slug).await?;
    let jobs = runs::jobs(&mut tx, run.id).await?;
    tx.commit().await?;
    crate::runner::wake::claimable();
    runs::post_run_status(store, root, &repo, &slug, &run).await;
    Ok(RunDetail { run, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, needs: &[&str], status: &str) -> Job {
        Job {
            id: 0,
            key: key.into(),
            name: key.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            matrix: serde_json::Value::Null,
            layer: 0,
            status: status.into(),
            attempt: 1,
            runner_id: None,
            lease_expires_at: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            concurrency_group: None,
            reused_from: None,
            labels: Vec::new(),
            executor: None,
            retry_max: 0,
            retry_when: Vec::new(),
            after_failure: false,
            continue_on_error: false,
            run_id: 0,
            version: 1,
            attempt_token: None,
        }
    }

    fn keys(s: &BTreeSet<String>) -> Vec<&str> {
        s.iter().map(String::as_str).collect()
    }

    #[test]
    fn selections_expand_to_dependents_and_unsucceeded_needs() {
        let jobs = vec![
            job("a", &[], "success"),
            job("b", &[], "failure"),
            job("c", &["a"], "success"),
            job("d", &["b"], "skipped"),
            job("e", &["d"], "skipped"),
        ];
        let all = to_queue(&jobs, &Selection::Keyword("all".into())).unwrap();
        assert_eq!(keys(&all), ["a", "b", "c", "d", "e"]);
        let failed = to_queue(&jobs, &Selection::Keyword("failed".into())).unwrap();
        assert_eq!(keys(&failed), ["b", "d", "e"]);
        let one = to_queue(&jobs, &Selection::Jobs(vec!["a".into()])).unwrap();
        assert_eq!(keys(&one), ["a", "c"]);
        // `e` needs `d`, which needs the failed `b`: all three run.
        let e = to_queue(&jobs, &Selection::Jobs(vec!["e".into()])).unwrap();
        assert_eq!(keys(&e), ["b", "d", "e"]);
        assert!(to_queue(&jobs, &Selection::Jobs(vec!["zz".into()])).is_err());
        assert!(to_queue(&jobs, &Selection::Keyword("some".into())).is_err());
        let green = vec![job("a", &[], "success")];
        assert!(to_queue(&green, &Selection::Keyword("failed".into())).is_err());
    }
}
