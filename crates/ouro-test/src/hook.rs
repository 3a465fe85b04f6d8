//! Ingestion at job finish: the [`ReportHook`] that the server installs as Build's finish hook
//! (`ouro_build::runner::server::set_finish_hook`). When an attempt ends, it reads the report
//! files the job uploaded under `.ouro-reports/junit/` and `.ouro-reports/coverage/` (see
//! `ouro_build::artifacts::REPORTS_PREFIX`), parses them ([`crate::parse`]), stores them
//! ([`crate::results::ingest`]), evaluates the job's `quality:` gate and posts the
//! `ouro/quality/<job>` commit status. A file that does not parse becomes a
//! `FILE:LINE:COL: error[CODE]: message` line in the job log and a problem on the run's Tests
//! page; it never fails the finish.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use ouro_build::artifacts::REPORTS_PREFIX;
use ouro_build::exec::BoxFuture;
use ouro_build::runner::server::{FinishHook, FinishVerdict};
use ouro_build::runs;
use ouro_code::cr::{NewStatus, StatusState};
use ouro_store::{Store, StoreError};

use crate::model::{Coverage, Report};
use crate::parse::{self, Limits};
use crate::results::{self, Ingest, JobRef, Problem};

/// Build's finish hook for test reports (stateless: everything comes from the store and the
/// data dir).
#[derive(Clone, Debug, Default)]
pub struct ReportHook {
    pub limits: Limits,
}

impl ReportHook {
    pub fn install() {
        ouro_build::runner::server::set_finish_hook(Arc::new(ReportHook::default()));
    }
}

impl FinishHook for ReportHook {
    fn job_finishing<'a>(
        &'a self,
        store: &'a Store,
        data_dir: &'a Path,
        job: &'a runs::Job,
        status: &'a str,
    ) -> BoxFuture<'a, Result<FinishVerdict, StoreError>> {
        Box::pin(ingest_job(store, data_dir, job, status, &self.limits))
    }
}

fn read_blob(data_dir: &Path, sha: &str) -> Result<Vec<u8>, String> {
    let blobs = ouro_build::blobs_s3::for_data_dir(data_dir);
    let mut r = blobs
        .open(sha)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("blob {sha} is missing"))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The reports the job's current attempt uploaded: `(kind, path in the workspace, sha256)`.
async fn report_files(
    store: &Store,
    job: &runs::Job,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let arts = ouro_build::artifacts::list_for_run(&mut store.read().await?, job.run_id).await?;
    let since = job.started_at.unwrap_or(0);
    let prefix = format!("{REPORTS_PREFIX}/");
    Ok(arts
        .into_iter()
        .filter(|a| a.job_id == job.id && a.created_at >= since)
        .filter_map(|a| {
            let rest = a.path.strip_prefix(&prefix)?;
            let (kind, path) = rest.split_once('/')?;
            Some((kind.to_string(), path.to_string(), a.sha256))
        })
        .collect())
}

/// The changed lines (new side) of the change request `cr_number`, per path.
async fn changed_lines(
    store: &Store,
    data_dir: &Path,
    run: &runs::Run,
    repo: &ouro_code::repos::Repo,
) -> Option<BTreeMap<String, BTreeSet<u32>>> {
    let cr = ouro_code::cr::get(&mut store.read().await.ok()?, repo.id, run.cr_number?)
        .await
        .ok()?;
    cr_changed_lines(data_dir, repo, &cr, &run.sha).await
}

/// The added lines (new side) of change request `cr` up to commit `head`, per path: what diff
/// coverage measures. `None` when the diff cannot be read.
pub async fn cr_changed_lines(
    data_dir: &Path,
    repo: &ouro_code::repos::Repo,
    cr: &ouro_code::cr::ChangeRequest,
    head: &str,
) -> Option<BTreeMap<String, BTreeSet<u32>>> {
    let dir = repo.dir(&ouro_code::repos::root(data_dir));
    let base = ouro_code::cr_comments::diff_base(&dir, cr).await.ok()??;
    let opts = ouro_code::diff::DiffOptions {
        max_file_lines: usize::MAX / 2,
        max_total_lines: usize::MAX / 2,
        ..Default::default()
    };
    let diff = ouro_code::diff::between(&dir, &base, head, &opts)
        .await
        .ok()?;
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for f in &diff.files {
        let set = out.entry(f.path().to_string()).or_default();
        for h in &f.hunks {
            for l in &h.lines {
                if l.kind == ouro_code::diff::LineKind::Add
                    && let Some(n) = l.new
                {
                    set.insert(n);
                }
            }
        }
    }
    Some(out)
}

async fn ingest_job(
    store: &Store,
    data_dir: &Path,
    job: &runs::Job,
    _status: &str,
    limits: &Limits,
) -> Result<FinishVerdict, StoreError> {
    let files = report_files(store, job).await?;
    if files.is_empty() {
        return Ok(FinishVerdict::default());
    }
    let run = runs::run_by_id(&mut store.read().await?, job.run_id).await?;
    let mut log = Vec::new();
    let mut problems = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    let mut coverages: Vec<Coverage> = Vec::new();
    for (kind, path, sha) in &files {
        let (dd, sha2, limits2, path2, kind2) = (
            data_dir.to_path_buf(),
            sha.clone(),
            limits.clone(),
            path.clone(),
            kind.clone(),
        );
        let parsed = tokio::task::spawn_blocking(move || {
            let bytes = read_blob(&dd, &sha2).map_err(|m| Problem {
                file: path2.clone(),
                line: 0,
                column: 0,
                code: "test.report_unreadable".into(),
                message: m,
            })?;
            let to_problem = |e: parse::ParseError| Problem {
                file: e.file,
                line: e.line,
                column: e.column,
                code: e.code.to_string(),
                message: e.message,
            };
            if kind2 == "coverage" {
                parse::coverage(&path2, &bytes, &limits2)
                    .map(|c| (None, Some(c)))
                    .map_err(to_problem)
            } else {
                parse::junit(&path2, &bytes, &limits2)
                    .map(|r| (Some(r), None))
                    .map_err(to_problem)
            }
        })
        .await
        .map_err(|_| ouro_core::OuroError::internal())?;
        match parsed {
            Ok((r, c)) => {
                reports.extend(r);
                coverages.extend(c);
            }
            Err(p) => {
                log.push(format!("reports: {p}"));
                problems.push(p);
            }
        }
    }
    let report = parse::merge(reports);
    let coverage = (!coverages.is_empty()).then(|| parse::merge_coverage(coverages));
    let pjob = ouro_build::runner::server::pipeline_job(data_dir, &run, &job.key).await;
    let quality = pjob.and_then(|j| j.quality);
    let repo = match run.repo_id {
        Some(id) => ouro_code::repos::by_id(&mut store.read().await?, run.project_id, id)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let default_ref = repo
        .as_ref()
        .map(|r| format!("refs/heads/{}", r.default_branch));
    let mut baseline_ref = default_ref.clone();
    let mut changed = None;
    if let (Some(_), Some(repo)) = (run.cr_number, repo.as_ref()) {
        if let Ok(cr) = ouro_code::cr::get(
            &mut store.read().await?,
            repo.id,
            run.cr_number.unwrap_or(0),
        )
        .await
        {
            baseline_ref = Some(format!("refs/heads/{}", cr.target));
        }
        if coverage.is_some() {
            changed = changed_lines(store, data_dir, &run, repo).await;
        }
    }
    let jref = JobRef {
        project_id: run.project_id,
        build_run_id: run.id,
        run_number: run.number,
        job_id: job.id,
        job_key: job.key.clone(),
        attempt: job.attempt,
        repo_id: run.repo_id,
        git_ref: run.git_ref.clone(),
        sha: run.sha.clone(),
        cr_number: run.cr_number,
    };
    let input = Ingest {
        report,
        coverage,
        problems,
        quality,
        baseline_ref,
        default_ref,
        changed_lines: changed,
    };
    let done = results::ingest(store, &jref, &input).await?;
    let t = done.totals;
    let mut line = format!(
        "tests: {} total, {} passed, {} failed, {} errored, {} skipped, {} flaky",
        t.total, t.passed, t.failed, t.errored, t.skipped, t.flaky
    );
    if let Some((c, tot)) = input.coverage.as_ref().map(|c| c.line_totals()) {
        let p = if tot == 0 {
            100.0
        } else {
            c as f64 * 100.0 / tot as f64
        };
        line.push_str(&format!("; line coverage {p:.1}% ({c}/{tot})"));
    }
    log.push(line);
    for id in &done.newly_flaky {
        if let Ok(Some(key)) =
            crate::flaky::file_work_item(store, run.project_id, *id, run.number).await
        {
            log.push(format!("tests: a newly flaky test got the work item {key}"));
        }
    }
    let mut fail_reason = None;
    if let Some(g) = &done.gate {
        for c in &g.checks {
            log.push(format!("quality: {}", c.sentence));
        }
        fail_reason = g.failure_sentence().map(|s| format!("quality gate: {s}"));
        if let Some(repo) = &repo {
            post_gate_status(store, data_dir, repo, &run, &job.key, g).await;
        }
    }
    Ok(FinishVerdict { log, fail_reason })
}

async fn post_gate_status(
    store: &Store,
    data_dir: &Path,
    repo: &ouro_code::repos::Repo,
    run: &runs::Run,
    job_key: &str,
    g: &crate::gate::Verdict,
) {
    let Ok(mut rd) = store.read().await else {
        return;
    };
    let Ok(slug) = ouro_store::q("SELECT slug FROM projects WHERE id = $1")
        .bind(run.project_id)
        .fetch_one(&mut rd)
        .await
        .and_then(|r| r.text("slug"))
    else {
        return;
    };
    drop(rd);
    let description = match g.failure_sentence() {
        Some(s) => s,
        None => "quality gate passed".to_string(),
    };
    let new = NewStatus {
        name: format!("ouro/quality/{job_key}")
            .chars()
            .take(100)
            .collect(),
        state: if g.passed {
            StatusState::Success
        } else {
            StatusState::Failure
        },
        url: None,
        description: Some(description.chars().take(1000).collect()),
    };
    let root = ouro_code::repos::root(data_dir);
    if let Err(e) =
        ouro_code::cr::post_status(store, &root, repo, &slug, &results::ACTOR, &run.sha, &new).await
    {
        tracing::warn!(run = run.id, error = %e, "cannot post the quality gate's status");
    }
}
