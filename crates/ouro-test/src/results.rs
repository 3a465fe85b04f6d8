//! Stored test results (tables `test_runs`, `test_cases`, `test_results`, `test_coverage_files`):
//! [`ingest`] keeps one job attempt's parsed reports in one transaction with its events, and the
//! readers answer what users ask: a run's tests ([`run_tests`]), one test's history
//! ([`case_history`]), coverage per branch ([`coverage_trend`]).
//!
//! - A case is identified per project by its identity key (`model::identity_key`); `test_cases`
//!   maps the key to a stable id that history hangs on.
//! - A `test_runs` row is one job attempt that reported. Its baseline is the last test run of the
//!   same job on the target branch (the change request's target, else the repository's default
//!   branch; on the default branch itself: its previous run). New failures and fixed tests are
//!   computed against it.
//! - Message and type are capped at 4 KiB, output (failure body, stdout, stderr) at 16 KiB.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ouro_build::pipeline::Quality;
use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::db::Arg;
use ouro_store::{Backend, Executor, Placeholders, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::flaky;
use crate::gate::{self, Facts, Verdict};
use crate::model::{Coverage, Outcome, Report, Totals};

pub const ACTOR: Actor = Actor::System("tests");
const MAX_MESSAGE: usize = 4 * 1024;
const MAX_OUTPUT: usize = 16 * 1024;
/// Results per multi-row INSERT on SQLite: 10 parameters a result, 10,000 a statement, under
/// its limit of 32,766.
const RESULT_BATCH: usize = 1_000;
/// Results gathered before they are written (their values in memory at once).
const RESULT_SLICE: usize = 10_000;
const RESULT_COLUMNS: &[&str] = &[
    "test_run_id",
    "case_id",
    "outcome",
    "attempts",
    "flaky",
    "duration_ms",
    "message",
    "kind",
    "output",
    "created_at",
];
/// Cases per upsert (7 parameters each).
const CASE_BATCH: usize = 1_000;
/// Keys per `IN` list when looking up existing cases.
const LOOKUP_BATCH: usize = 1_000;

/// A report file that could not be parsed: where, with a stable code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: error[{}]: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

/// The job attempt the reports belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRef {
    pub project_id: i64,
    pub build_run_id: i64,
    pub run_number: i64,
    pub job_id: i64,
    pub job_key: String,
    pub attempt: i64,
    pub repo_id: Option<i64>,
    /// Full ref name (`refs/heads/main`).
    pub git_ref: String,
    pub sha: String,
    pub cr_number: Option<i64>,
}

/// One job attempt's parsed reports.
#[derive(Clone, Debug, Default)]
pub struct Ingest {
    pub report: Report,
    pub coverage: Option<Coverage>,
    pub problems: Vec<Problem>,
    pub quality: Option<Quality>,
    /// The full ref of the branch to compare with (new failures, duration).
    pub baseline_ref: Option<String>,
    /// The default branch's full ref (flip-rate scoring happens there).
    pub default_ref: Option<String>,
    /// Changed lines per file of the change request (diff coverage), when known.
    pub changed_lines: Option<BTreeMap<String, BTreeSet<u32>>>,
}

/// What [`ingest`] stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub test_run_id: i64,
    pub totals: Totals,
    /// Failed or errored, not quarantined.
    pub failures: u64,
    pub new_failures: u64,
    /// The gate's verdict when the job has a `quality:` block.
    pub gate: Option<Verdict>,
    /// Cases that became flaky with this run (the event was appended once).
    pub newly_flaky: Vec<i64>,
}

fn cap(s: Option<&str>, max: usize) -> Option<String> {
    s.map(|s| {
        if s.len() <= max {
            s.to_string()
        } else {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &s[..end])
        }
    })
}

pub(crate) fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Errored => "errored",
        Outcome::Skipped => "skipped",
    }
}

pub(crate) fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "failed" | "errored")
}

async fn slug_of(ex: &mut impl Executor, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(ex)
        .await?
        .text("slug")
}

/// Keys of the project's tests under an active quarantine at `now`.
pub async fn quarantined_keys(
    ex: &mut impl Executor,
    project_id: i64,
    now: i64,
) -> Result<BTreeSet<String>, StoreError> {
    q(
        "SELECT c.case_key FROM test_quarantine t JOIN test_cases c ON c.id = t.case_id \
          WHERE t.project_id = $1 AND t.ended_at IS NULL AND t.expires_at > $2",
    )
    .bind(project_id)
    .bind(now)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| r.text("case_key"))
    .collect()
}

/// The last test run of `job_key` on `git_ref` before `build_run_id`.
async fn baseline(
    ex: &mut impl Executor,
    job: &JobRef,
    git_ref: &str,
) -> Result<Option<(i64, u64)>, StoreError> {
    let row = q(
        "SELECT id, duration_ms FROM test_runs WHERE project_id = $1 AND git_ref = $2 \
         AND job_key = $3 AND build_run_id <> $4 AND COALESCE(repo_id, 0) = $5 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(job.project_id)
    .bind(git_ref)
    .bind(job.job_key.as_str())
    .bind(job.build_run_id)
    .bind(job.repo_id.unwrap_or(0))
    .fetch_optional(ex)
    .await?;
    row.map(|r| Ok((r.i64("id")?, r.i64("duration_ms")?.max(0) as u64)))
        .transpose()
}

/// Case keys failing in the test run `id`.
async fn failing_keys(ex: &mut impl Executor, id: i64) -> Result<BTreeSet<String>, StoreError> {
    q(
        "SELECT c.case_key FROM test_results r JOIN test_cases c ON c.id = r.case_id \
          WHERE r.test_run_id = $1 AND r.outcome IN ('failed', 'errored')",
    )
    .bind(id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| r.text("case_key"))
    .collect()
}

/// Diff coverage: `(covered, total)` over the changed lines that the coverage report
/// instruments.
pub fn diff_coverage(cov: &Coverage, changed: &BTreeMap<String, BTreeSet<u32>>) -> (u64, u64) {
    let mut covered = 0;
    let mut total = 0;
    for f in &cov.files {
        let Some(lines) = changed.get(&f.path) else {
            continue;
        };
        for (line, hits) in &f.lines {
            if lines.contains(line) {
                total += 1;
                if *hits > 0 {
                    covered += 1;
                }
            }
        }
    }
    (covered, total)
}

/// The stored ids of the report's cases by identity key. Existing cases are looked up in bulk;
/// new ones are inserted, and those whose source file became known or changed get it. The
/// first case of a key that appears more than once gives its file.
///
/// New cases are plain INSERTs, not upserts (PostgreSQL's speculative insertion costs about
/// 0.6 s per 100k rows): on PostgreSQL a transaction lock per project keeps two ingestions of
/// one project from inserting the same new case between lookup and insert; SQLite has a single
/// writer already.
async fn case_ids<'c>(
    tx: &mut ouro_store::Tx,
    backend: Backend,
    project_id: i64,
    cases: &[&'c crate::model::Case],
    now: i64,
) -> Result<HashMap<&'c str, i64>, StoreError> {
    if backend == Backend::Postgres {
        // Two keys (class, project): a key space apart from the ledger's one-key lock.
        q("SELECT pg_advisory_xact_lock(7071, CAST($1 % 2147483647 AS INTEGER)) IS NULL AS locked")
            .bind(project_id)
            .fetch_all(&mut *tx)
            .await?;
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(cases.len());
    let fresh: Vec<&crate::model::Case> = cases
        .iter()
        .copied()
        .filter(|c| seen.insert(c.key.as_str()))
        .collect();
    drop(seen);
    let mut stored: HashMap<String, (i64, Option<String>)> = HashMap::with_capacity(fresh.len());
    let mut rest = &fresh[..];
    for size in ouro_store::batch_sizes(fresh.len(), LOOKUP_BATCH) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        // One unique-index probe per key, whatever the statistics say. Right after a bulk
        // insert PostgreSQL has none for test_cases and, for `case_key IN (...)` or a plain
        // join with the keys, expected a few hundred rows for the whole project, so it read
        // all of the project's cases for every batch (5 s for 100k cases; 170 s once the
        // prepared statement went generic). A LATERAL subquery kept apart by OFFSET 0 must
        // be run per key. SQLite has no LATERAL and probes the index for a join anyway.
        let mut ph = Placeholders::new(backend);
        let keys = ph.rows(chunk.len(), 1);
        let project = ph.one();
        let sql = match backend {
            Backend::Postgres => format!(
                "SELECT c.id, c.case_key, c.file FROM (VALUES {keys}) AS k CROSS JOIN LATERAL \
                 (SELECT id, case_key, file FROM test_cases WHERE project_id = {project} \
                 AND case_key = k.column1 OFFSET 0) AS c"
            ),
            Backend::Sqlite => format!(
                "SELECT c.id, c.case_key, c.file FROM (VALUES {keys}) AS k \
                 JOIN test_cases c ON c.project_id = {project} AND c.case_key = k.column1"
            ),
        };
        let mut stmt = q(sql);
        for c in chunk {
            stmt = stmt.bind(c.key.as_str());
        }
        stmt = stmt.bind(project_id);
        for r in stmt.fetch_all(&mut *tx).await? {
            stored.insert(r.text("case_key")?, (r.i64("id")?, r.opt_text("file")?));
        }
    }
    let mut ids: HashMap<&str, i64> = HashMap::with_capacity(fresh.len());
    let mut new: Vec<&crate::model::Case> = Vec::new();
    let mut moved: Vec<&crate::model::Case> = Vec::new();
    for c in &fresh {
        match stored.get(c.key.as_str()) {
            None => new.push(c),
            Some((_, file)) if c.file.is_some() && c.file != *file => moved.push(c),
            Some((id, _)) => {
                ids.insert(c.key.as_str(), *id);
            }
        }
    }
    drop(stored);
    for (list, conflict) in [
        (&new, ""),
        (
            &moved,
            " ON CONFLICT (project_id, case_key) \
             DO UPDATE SET file = COALESCE(excluded.file, test_cases.file)",
        ),
    ] {
        write_cases(tx, backend, project_id, list, conflict, now, &mut ids).await?;
    }
    Ok(ids)
}

/// Inserts `cases` (or upserts them with `conflict`) in batches and notes their ids.
async fn write_cases<'c>(
    tx: &mut ouro_store::Tx,
    backend: Backend,
    project_id: i64,
    cases: &[&'c crate::model::Case],
    conflict: &str,
    now: i64,
    ids: &mut HashMap<&'c str, i64>,
) -> Result<(), StoreError> {
    let mut rest = cases;
    for size in ouro_store::batch_sizes(cases.len(), CASE_BATCH) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut ph = Placeholders::new(backend);
        let mut stmt = q(format!(
            "INSERT INTO test_cases (project_id, case_key, suite, class, name, file, created_at) \
             VALUES {}{conflict} RETURNING id, case_key",
            ph.rows(chunk.len(), 7)
        ));
        for c in chunk {
            stmt = stmt
                .bind(project_id)
                .bind(c.key.as_str())
                .bind(c.suite.as_str())
                .bind(c.class.as_str())
                .bind(c.name.as_str())
                .bind(c.file.clone())
                .bind(now);
        }
        let by_key: HashMap<&str, &str> = chunk
            .iter()
            .map(|c| (c.key.as_str(), c.key.as_str()))
            .collect();
        for r in stmt.fetch_all(&mut *tx).await? {
            let key = r.text("case_key")?;
            let id = r.i64("id")?;
            if let Some(k) = by_key.get(key.as_str()) {
                ids.insert(k, id);
            }
        }
    }
    Ok(())
}

/// Stores one job attempt's reports (replacing an earlier ingestion of the same attempt),
/// evaluates its quality gate and records flaky tests, and appends `test.report_ingested`
/// (plus `quality_gate.evaluated` with a gate and `test.flaky_detected` once per newly flaky
/// test) in the same transaction.
pub async fn ingest(store: &Store, job: &JobRef, input: &Ingest) -> Result<Ingested, StoreError> {
    let now = ouro_core::time::now_ms();
    let totals = input.report.totals();
    let mut tx = store.begin().await?;
    let slug = slug_of(&mut tx, job.project_id).await?;
    q("DELETE FROM test_runs WHERE job_id = $1 AND attempt = $2")
        .bind(job.job_id)
        .bind(job.attempt)
        .execute(&mut tx)
        .await?;
    let quarantined = quarantined_keys(&mut tx, job.project_id, now).await?;
    let base = match &input.baseline_ref {
        Some(r) => baseline(&mut tx, job, r).await?,
        None => None,
    };
    let base_failing = match base {
        Some((id, _)) => failing_keys(&mut tx, id).await?,
        None => BTreeSet::new(),
    };
    let mut failures = 0;
    let mut new_failures = 0;
    let mut duration: u64 = 0;
    for c in input.report.cases() {
        duration += c.duration_ms().unwrap_or(0);
        if is_failure(outcome_str(c.outcome())) && !quarantined.contains(&c.key) {
            failures += 1;
            if !base_failing.contains(&c.key) {
                new_failures += 1;
            }
        }
    }
    let (lc, lt) = input
        .coverage
        .as_ref()
        .map(|c| c.line_totals())
        .map_or((None, None), |(c, t)| (Some(c as i64), Some(t as i64)));
    let (bc, bt) = input
        .coverage
        .as_ref()
        .map(|c| c.branch_totals())
        .map_or((None, None), |(c, t)| (Some(c as i64), Some(t as i64)));
    let gate = input.quality.as_ref().map(|qual| {
        let facts = Facts {
            failures,
            new_failures,
            coverage: input.coverage.as_ref().map(|c| c.line_totals()),
            diff_coverage: match (&input.coverage, &input.changed_lines) {
                (Some(c), Some(ch)) => Some(diff_coverage(c, ch)),
                _ => None,
            },
            duration_ms: duration,
            baseline_duration_ms: base.map(|b| b.1),
        };
        gate::evaluate(qual, &facts)
    });
    let test_run_id = q(
        "INSERT INTO test_runs (project_id, build_run_id, run_number, job_id, job_key, attempt, \
         repo_id, git_ref, sha, cr_number, baseline_id, total, passed, failed, skipped, errored, \
         flaky, duration_ms, lines_covered, lines_total, branches_covered, branches_total, \
         errors, gate, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25) RETURNING id",
    )
    .bind(job.project_id)
    .bind(job.build_run_id)
    .bind(job.run_number)
    .bind(job.job_id)
    .bind(job.job_key.as_str())
    .bind(job.attempt)
    .bind(job.repo_id)
    .bind(job.git_ref.as_str())
    .bind(job.sha.as_str())
    .bind(job.cr_number)
    .bind(base.map(|b| b.0))
    .bind(totals.total as i64)
    .bind(totals.passed as i64)
    .bind(totals.failed as i64)
    .bind(totals.skipped as i64)
    .bind(totals.errored as i64)
    .bind(totals.flaky as i64)
    .bind(duration as i64)
    .bind(lc)
    .bind(lt)
    .bind(bc)
    .bind(bt)
    .bind(serde_json::to_string(&input.problems).unwrap_or_else(|_| "[]".into()))
    .bind(
        gate.as_ref()
            .map(|g| serde_json::to_string(g).unwrap_or_default())
            .unwrap_or_default(),
    )
    .bind(now)
    .fetch_one(&mut tx)
    .await?
    .i64("id")?;

    // Cases are written by multi-row statements of a few fixed shapes
    // (`ouro_store::batch_sizes`), so the connection's statement cache reuses them; results,
    // which need no ids back, by `ouro_store::insert_rows` (COPY on PostgreSQL), 10,000 at a
    // time to bound the memory their values take.
    let backend = tx.backend();
    let cases: Vec<&crate::model::Case> = input.report.cases().collect();
    let case_ids = case_ids(&mut tx, backend, job.project_id, &cases, now).await?;
    let mut outcomes: Vec<(i64, &'static str, bool)> = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(RESULT_SLICE) {
        let mut values: Vec<Arg> = Vec::with_capacity(chunk.len() * RESULT_COLUMNS.len());
        for c in chunk {
            let id = *case_ids
                .get(c.key.as_str())
                .ok_or_else(|| StoreError::Decode(format!("no stored test case for {}", c.key)))?;
            let last = c.attempts.last();
            let output = last.map(|a| {
                [&a.details, &a.stdout, &a.stderr]
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let outcome = outcome_str(c.outcome());
            let text = |t: Option<String>| t.map_or(Arg::NullText, Arg::Text);
            values.extend([
                Arg::I64(test_run_id),
                Arg::I64(id),
                Arg::Text(outcome.to_string()),
                Arg::I64(c.attempts.len().max(1) as i64),
                Arg::Bool(c.is_flaky()),
                c.duration_ms().map_or(Arg::NullI64, |d| Arg::I64(d as i64)),
                text(cap(last.and_then(|a| a.message.as_deref()), MAX_MESSAGE)),
                text(cap(last.and_then(|a| a.kind.as_deref()), MAX_MESSAGE)),
                text(cap(output.as_deref().filter(|o| !o.is_empty()), MAX_OUTPUT)),
                Arg::I64(now),
            ]);
            outcomes.push((id, outcome, c.is_flaky()));
        }
        ouro_store::insert_rows(
            &mut tx,
            "test_results",
            RESULT_COLUMNS,
            values,
            RESULT_BATCH,
        )
        .await?;
    }
    if let Some(cov) = &input.coverage {
        for f in &cov.files {
            let hits = f
                .lines
                .iter()
                .map(|(l, h)| format!("{l}:{h}"))
                .collect::<Vec<_>>()
                .join(",");
            q(
                "INSERT INTO test_coverage_files (test_run_id, path, lines_total, lines_covered, \
               branches_total, branches_covered, line_hits) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(test_run_id)
            .bind(f.path.as_str())
            .bind(f.lines_total as i64)
            .bind(f.lines_covered as i64)
            .bind(f.branches_total as i64)
            .bind(f.branches_covered as i64)
            .bind(hits)
            .execute(&mut tx)
            .await?;
        }
    }
    let on_default = input.default_ref.as_deref() == Some(job.git_ref.as_str());
    let newly_flaky = flaky::detect(&mut tx, job, test_run_id, &outcomes, on_default, now).await?;
    let key_of: HashMap<i64, &str> = if newly_flaky.is_empty() {
        HashMap::new()
    } else {
        case_ids.iter().map(|(k, v)| (*v, *k)).collect()
    };
    // One multi-row append for all of them: a report can make thousands of tests newly flaky.
    let mut events: Vec<NewEvent> = Vec::with_capacity(newly_flaky.len() + 2);
    for (case_id, cause, score) in &newly_flaky {
        let key = key_of.get(case_id).copied().unwrap_or_default();
        events.push(
            NewEvent::new(
                ev::TEST_FLAKY_DETECTED,
                &ACTOR,
                case_id,
                json!({"case_id": case_id, "key": key, "cause": cause, "score": score,
                       "run": job.run_number, "job": job.job_key, "sha": job.sha}),
            )
            .in_project(job.project_id, &slug),
        );
    }
    events.push(
        NewEvent::new(
            ev::TEST_REPORT_INGESTED,
            &ACTOR,
            job.build_run_id,
            json!({"run": job.run_number, "job": job.job_key, "attempt": job.attempt,
                   "totals": totals, "lines_covered": lc, "lines_total": lt,
                   "problems": input.problems.len()}),
        )
        .in_project(job.project_id, &slug),
    );
    if let Some(g) = &gate {
        events.push(
            NewEvent::new(
                ev::QUALITY_GATE_EVALUATED,
                &ACTOR,
                job.build_run_id,
                json!({"run": job.run_number, "job": job.job_key, "passed": g.passed,
                       "checks": g.checks}),
            )
            .in_project(job.project_id, &slug),
        );
    }
    tx.append_all(&events).await?;
    tx.commit().await?;
    Ok(Ingested {
        test_run_id,
        totals,
        failures,
        new_failures,
        gate,
        newly_flaky: newly_flaky.into_iter().map(|(id, _, _)| id).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One job attempt's reports, as a run shows them.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct JobTests {
    pub job: String,
    pub attempt: i64,
    pub totals: Counts,
    pub duration_ms: i64,
    /// Line coverage `covered`/`total`, when the job had a coverage report.
    pub lines_covered: Option<i64>,
    pub lines_total: Option<i64>,
    pub branches_covered: Option<i64>,
    pub branches_total: Option<i64>,
    /// Report files that could not be parsed.
    pub problems: Vec<Problem>,
    /// The quality gate's verdict, when the job has a `quality:` block.
    pub gate: Option<Verdict>,
    /// The run number of the target branch's run it was compared with.
    pub baseline_run: Option<i64>,
}

/// One test's result in a run.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct CaseResult {
    pub case_id: i64,
    pub key: String,
    pub suite: String,
    pub class: String,
    pub name: String,
    pub job: String,
    /// `passed`, `failed`, `errored` or `skipped` (the last attempt's).
    pub outcome: String,
    pub attempts: i64,
    /// Passed only on retry.
    pub flaky: bool,
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub output: Option<String>,
    /// Under an active quarantine: shown, but does not fail the job or the gate.
    pub quarantined: bool,
    /// Failing here but not on the target branch's last run.
    pub new_failure: bool,
}

/// The tests of a pipeline run (every job's last reported attempt).
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct RunTests {
    pub totals: Counts,
    pub duration_ms: i64,
    pub lines_covered: Option<i64>,
    pub lines_total: Option<i64>,
    /// Line coverage percentage (one decimal).
    pub coverage_percent: Option<f64>,
    pub jobs: Vec<JobTests>,
    /// Failed and errored tests, new failures first.
    pub failures: Vec<CaseResult>,
    pub new_failures: Vec<CaseResult>,
    /// Failing on the target branch's last run, passing here.
    pub fixed: Vec<CaseResult>,
    /// Passed only on retry.
    pub flaky: Vec<CaseResult>,
    /// The ten slowest tests.
    pub slowest: Vec<CaseResult>,
    pub skipped: Vec<CaseResult>,
}

/// Counts over a report: a case counts once, by its last attempt; `flaky` (passed only on
/// retry) are also counted in `passed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Counts {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub errored: u64,
    pub flaky: u64,
}

fn totals_of(r: &Row) -> Result<Counts, StoreError> {
    let g = |n: &str| r.i64(n).map(|v| v.max(0) as u64);
    Ok(Counts {
        total: g("total")?,
        passed: g("passed")?,
        failed: g("failed")?,
        skipped: g("skipped")?,
        errored: g("errored")?,
        flaky: g("flaky")?,
    })
}

fn add(a: &mut Counts, b: &Counts) {
    a.total += b.total;
    a.passed += b.passed;
    a.failed += b.failed;
    a.skipped += b.skipped;
    a.errored += b.errored;
    a.flaky += b.flaky;
}

const RESULT_SELECT: &str = "SELECT r.*, c.case_key, c.suite, c.class, c.name, t.job_key \
     FROM test_results r JOIN test_cases c ON c.id = r.case_id JOIN test_runs t ON t.id = r.test_run_id";

fn result_of(r: &Row, quarantined: &BTreeSet<String>) -> Result<CaseResult, StoreError> {
    let key = r.text("case_key")?;
    Ok(CaseResult {
        case_id: r.i64("case_id")?,
        quarantined: quarantined.contains(&key),
        key,
        suite: r.text("suite")?,
        class: r.text("class")?,
        name: r.text("name")?,
        job: r.text("job_key")?,
        outcome: r.text("outcome")?,
        attempts: r.i64("attempts")?,
        flaky: r.bool("flaky")?,
        duration_ms: r.opt_i64("duration_ms")?,
        message: r.opt_text("message")?,
        kind: r.opt_text("kind")?,
        output: r.opt_text("output")?,
        new_failure: false,
    })
}

/// The ids of the last reported attempt of every job of a pipeline run, with their rows.
async fn latest_runs(ex: &mut impl Executor, build_run_id: i64) -> Result<Vec<Row>, StoreError> {
    let rows = q("SELECT * FROM test_runs WHERE build_run_id = $1 ORDER BY job_id, attempt")
        .bind(build_run_id)
        .fetch_all(ex)
        .await?;
    let mut last: BTreeMap<i64, Row> = BTreeMap::new();
    for r in rows {
        last.insert(r.i64("job_id")?, r);
    }
    Ok(last.into_values().collect())
}

fn pct(c: i64, t: i64) -> f64 {
    if t <= 0 {
        100.0
    } else {
        (c as f64 * 1000.0 / t as f64).round() / 10.0
    }
}

/// The tests of the pipeline run `build_run_id` (see [`RunTests`]); empty when no job
/// reported.
pub async fn run_tests(
    ex: &mut impl Executor,
    project_id: i64,
    build_run_id: i64,
) -> Result<RunTests, StoreError> {
    let now = ouro_core::time::now_ms();
    let quarantined = quarantined_keys(&mut *ex, project_id, now).await?;
    let runs = latest_runs(&mut *ex, build_run_id).await?;
    let mut out = RunTests::default();
    let (mut lc, mut lt) = (None::<i64>, None::<i64>);
    let mut all = Vec::new();
    for r in &runs {
        let totals = totals_of(r)?;
        add(&mut out.totals, &totals);
        out.duration_ms += r.i64("duration_ms")?;
        if let (Some(c), Some(t)) = (r.opt_i64("lines_covered")?, r.opt_i64("lines_total")?) {
            lc = Some(lc.unwrap_or(0) + c);
            lt = Some(lt.unwrap_or(0) + t);
        }
        let baseline_id = r.opt_i64("baseline_id")?;
        let (base_failing, baseline_run) = match baseline_id {
            Some(b) => {
                let n = q("SELECT run_number FROM test_runs WHERE id = $1")
                    .bind(b)
                    .fetch_optional(&mut *ex)
                    .await?
                    .map(|r| r.i64("run_number"))
                    .transpose()?;
                (failing_keys(&mut *ex, b).await?, n)
            }
            None => (BTreeSet::new(), None),
        };
        let gate = r.text("gate")?;
        out.jobs.push(JobTests {
            job: r.text("job_key")?,
            attempt: r.i64("attempt")?,
            totals,
            duration_ms: r.i64("duration_ms")?,
            lines_covered: r.opt_i64("lines_covered")?,
            lines_total: r.opt_i64("lines_total")?,
            branches_covered: r.opt_i64("branches_covered")?,
            branches_total: r.opt_i64("branches_total")?,
            problems: serde_json::from_str(&r.text("errors")?).unwrap_or_default(),
            gate: (!gate.is_empty())
                .then(|| serde_json::from_str(&gate).ok())
                .flatten(),
            baseline_run,
        });
        let id = r.i64("id")?;
        let rows = q(format!(
            "{RESULT_SELECT} WHERE r.test_run_id = $1 ORDER BY r.id"
        ))
        .bind(id)
        .fetch_all(&mut *ex)
        .await?;
        let mut here = BTreeSet::new();
        for row in &rows {
            let mut c = result_of(row, &quarantined)?;
            c.new_failure = is_failure(&c.outcome) && !base_failing.contains(&c.key);
            here.insert((c.key.clone(), c.outcome.clone()));
            all.push(c);
        }
        if let Some(b) = baseline_id {
            let rows = q(format!(
                "{RESULT_SELECT} WHERE r.test_run_id = $1 AND r.outcome IN ('failed', 'errored')"
            ))
            .bind(b)
            .fetch_all(&mut *ex)
            .await?;
            for row in &rows {
                let c = result_of(row, &quarantined)?;
                if here.contains(&(c.key.clone(), "passed".to_string())) {
                    let mut now_c = all
                        .iter()
                        .find(|x| x.key == c.key && x.outcome == "passed")
                        .cloned()
                        .unwrap_or(c);
                    now_c.new_failure = false;
                    out.fixed.push(now_c);
                }
            }
        }
    }
    out.lines_covered = lc;
    out.lines_total = lt;
    out.coverage_percent = match (lc, lt) {
        (Some(c), Some(t)) => Some(pct(c, t)),
        _ => None,
    };
    let mut failures: Vec<CaseResult> = all
        .iter()
        .filter(|c| is_failure(&c.outcome))
        .cloned()
        .collect();
    failures.sort_by_key(|c| (!c.new_failure, c.quarantined, c.key.clone()));
    out.new_failures = failures.iter().filter(|c| c.new_failure).cloned().collect();
    out.failures = failures;
    out.flaky = all.iter().filter(|c| c.flaky).cloned().collect();
    out.skipped = all
        .iter()
        .filter(|c| c.outcome == "skipped")
        .cloned()
        .collect();
    let mut slow: Vec<CaseResult> = all
        .iter()
        .filter(|c| c.duration_ms.is_some())
        .cloned()
        .collect();
    slow.sort_by_key(|c| std::cmp::Reverse(c.duration_ms));
    slow.truncate(10);
    out.slowest = slow;
    Ok(out)
}

/// A test case of a project.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct TestCase {
    pub id: i64,
    pub key: String,
    pub suite: String,
    pub class: String,
    pub name: String,
    pub file: Option<String>,
}

/// One past result of a test.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct HistoryEntry {
    /// The result's id: pass it as `before` to read the results older than this one.
    pub id: i64,
    /// The pipeline run's number.
    pub run: i64,
    pub job: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub outcome: String,
    pub attempts: i64,
    pub flaky: bool,
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub at: i64,
}

/// A test's history across runs and branches, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct CaseHistory {
    pub case: TestCase,
    /// One page of results, newest first.
    pub entries: Vec<HistoryEntry>,
    /// The `before` of the next older page; absent on the last page.
    pub next_before: Option<i64>,
    /// The first failure of the current failing streak (the newest results), if it fails now;
    /// over the whole history, not only this page.
    pub first_failure: Option<HistoryEntry>,
    /// The newest passing result over the whole history.
    pub last_success: Option<HistoryEntry>,
    /// The commits between the last success and the first failure (newest first, at most
    /// [`MAX_COMMITS_BETWEEN`]): where to look for the change that broke it.
    pub commits_between: Vec<String>,
    pub quarantine: Option<crate::flaky::Quarantine>,
    pub flaky: Option<crate::flaky::FlakyTest>,
}

/// How many commits [`CaseHistory::commits_between`] lists at most.
pub const MAX_COMMITS_BETWEEN: i64 = 100;

fn case_of(r: &Row) -> Result<TestCase, StoreError> {
    Ok(TestCase {
        id: r.i64("id")?,
        key: r.text("case_key")?,
        suite: r.text("suite")?,
        class: r.text("class")?,
        name: r.text("name")?,
        file: r.opt_text("file")?,
    })
}

/// A test case by id, or 404 `test.case_not_found`.
pub async fn get_case(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<TestCase, StoreError> {
    q("SELECT * FROM test_cases WHERE project_id = $1 AND id = $2")
        .bind(project_id)
        .bind(id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(case_of)
        .transpose()?
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::TestCaseNotFound,
                format!("there is no test case {id} in this project"),
            )
            .into()
        })
}

/// The history of test `id`: its last `limit` results (one per job attempt), newest first.
pub async fn case_history(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
    limit: i64,
) -> Result<CaseHistory, StoreError> {
    case_history_page(ex, project_id, id, limit, None).await
}

// The columns of a history entry except the message. Every test_results column here is in the
// covering index test_results_case_history, so the scan reads no table page of test_results.
const HISTORY_FIELDS: &str = "r.id, r.outcome, r.attempts, r.flaky, r.duration_ms, \
     r.created_at, t.run_number, t.job_key, t.git_ref, t.sha";

fn history_entry(r: &Row) -> Result<HistoryEntry, StoreError> {
    Ok(HistoryEntry {
        id: r.i64("id")?,
        run: r.i64("run_number")?,
        job: r.text("job_key")?,
        git_ref: r.text("git_ref")?,
        sha: r.text("sha")?,
        outcome: r.text("outcome")?,
        attempts: r.i64("attempts")?,
        flaky: r.bool("flaky")?,
        duration_ms: r.opt_i64("duration_ms")?,
        message: None,
        at: r.i64("created_at")?,
    })
}

/// One history entry as the page query aggregates it: the columns of [`HISTORY_FIELDS`] in
/// order, `flaky` as 0/1 (SQLite) or a boolean (PostgreSQL).
#[derive(Deserialize)]
struct PackedEntry(
    i64,
    String,
    i64,
    serde_json::Value,
    Option<i64>,
    i64,
    i64,
    String,
    String,
    String,
);

/// At most `limit` results of case `id` older than result `before`, newest first, without
/// messages. The database packs them into one JSON array: a whole history is 10,000 rows, and
/// handing rows one by one to the driver cost several times the database's own work
/// (bench/test-store.py; about 4 us per row on SQLite).
async fn history_page(
    ex: &mut impl Executor,
    id: i64,
    before: i64,
    limit: i64,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let cols = HISTORY_FIELDS;
    let aggregate = match ex.backend() {
        Backend::Sqlite => format!("json_group_array(json_array({cols}) ORDER BY r.id DESC)"),
        Backend::Postgres => format!("json_agg(json_build_array({cols}) ORDER BY r.id DESC)::text"),
    };
    let row = q(format!(
        "SELECT {aggregate} AS page FROM (SELECT id, test_run_id, outcome, attempts, flaky, \
         duration_ms, created_at FROM test_results WHERE case_id = $1 AND id < $2 \
         ORDER BY id DESC LIMIT $3) r JOIN test_runs t ON t.id = r.test_run_id"
    ))
    .bind(id)
    .bind(before)
    .bind(limit)
    .fetch_one(&mut *ex)
    .await?;
    // PostgreSQL aggregates no rows to NULL.
    let Some(text) = row.opt_text("page")? else {
        return Ok(Vec::new());
    };
    let packed: Vec<PackedEntry> = serde_json::from_str(&text)
        .map_err(|e| StoreError::Decode(format!("test history page: {e}")))?;
    Ok(packed
        .into_iter()
        .map(|p| HistoryEntry {
            id: p.0,
            outcome: p.1,
            attempts: p.2,
            flaky: p.3.as_bool().unwrap_or_else(|| p.3.as_i64() == Some(1)),
            duration_ms: p.4,
            at: p.5,
            run: p.6,
            job: p.7,
            git_ref: p.8,
            sha: p.9,
            message: None,
        })
        .collect())
}

/// Fills in the messages of the results among `entries` that did not pass, reading only
/// their rows by id: messages are left out of the covering index (they can be long), and a
/// passed result has none worth showing. (A range condition on the case with a filter on
/// `outcome` made PostgreSQL fetch every row of the range to test the filter.)
async fn add_messages(
    ex: &mut impl Executor,
    entries: &mut [HistoryEntry],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = entries
        .iter()
        .filter(|e| e.outcome != "passed")
        .map(|e| e.id)
        .collect();
    let mut messages = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MESSAGE_BATCH) {
        let mut ph = Placeholders::new(ex.backend());
        let sql = format!(
            "SELECT id, message FROM test_results WHERE id IN ({}) AND message IS NOT NULL",
            ph.list(chunk.len())
        );
        let mut query = q(sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for r in query.fetch_all(&mut *ex).await? {
            messages.insert(r.i64("id")?, r.opt_text("message")?);
        }
    }
    for e in entries.iter_mut() {
        if let Some(m) = messages.remove(&e.id) {
            e.message = m;
        }
    }
    Ok(())
}

/// Result ids per message query: within both databases' parameter limits.
const MESSAGE_BATCH: usize = 500;

/// One result of case `id` chosen by `filter_order` (SQL after the case condition), with its
/// message.
async fn one_entry(
    ex: &mut impl Executor,
    id: i64,
    filter_order: &str,
    bound: i64,
) -> Result<Option<HistoryEntry>, StoreError> {
    let row = q(format!(
        "SELECT {HISTORY_FIELDS} FROM test_results r JOIN test_runs t ON t.id = r.test_run_id \
         WHERE r.case_id = $1 {filter_order} LIMIT 1"
    ))
    .bind(id)
    .bind(bound)
    .fetch_optional(&mut *ex)
    .await?;
    let Some(mut e) = row.as_ref().map(history_entry).transpose()? else {
        return Ok(None);
    };
    add_messages(&mut *ex, std::slice::from_mut(&mut e)).await?;
    Ok(Some(e))
}

/// One page of test `id`'s history: at most `limit` results older than the result `before`
/// (all when `None`), newest first. The first failure, last success and commits between them
/// are computed over the whole history whatever the page.
pub async fn case_history_page(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
    limit: i64,
    before: Option<i64>,
) -> Result<CaseHistory, StoreError> {
    let case = get_case(&mut *ex, project_id, id).await?;
    let limit = limit.clamp(1, 10_000);
    // One row more than the page tells whether an older page exists.
    let mut entries = history_page(&mut *ex, id, before.unwrap_or(i64::MAX), limit + 1).await?;
    let next_before = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    add_messages(&mut *ex, &mut entries).await?;
    let last_success = one_entry(
        &mut *ex,
        id,
        "AND r.outcome = 'passed' AND r.id < $2 ORDER BY r.id DESC",
        i64::MAX,
    )
    .await?;
    // The current streak: failures newer than the last success (skipped results in between do
    // not end it); its first failure is the oldest of them.
    let after = last_success.as_ref().map_or(0, |s| s.id);
    let first_failure = one_entry(
        &mut *ex,
        id,
        "AND r.outcome IN ('failed', 'errored') AND r.id > $2 ORDER BY r.id ASC",
        after,
    )
    .await?;
    let mut commits_between = Vec::new();
    if let (Some(f), Some(s)) = (&first_failure, &last_success) {
        let rows = q("SELECT t.sha, MAX(r.id) AS newest FROM test_results r \
             JOIN test_runs t ON t.id = r.test_run_id \
             WHERE r.case_id = $1 AND r.id > $2 AND r.id <= $3 \
             GROUP BY t.sha ORDER BY newest DESC LIMIT $4")
        .bind(id)
        .bind(s.id)
        .bind(f.id)
        .bind(MAX_COMMITS_BETWEEN - 1)
        .fetch_all(&mut *ex)
        .await?;
        for r in &rows {
            commits_between.push(r.text("sha")?);
        }
        if !commits_between.contains(&s.sha) {
            commits_between.push(s.sha.clone());
        }
    }
    let now = ouro_core::time::now_ms();
    let quarantine = crate::flaky::active_quarantine(&mut *ex, project_id, id, now).await?;
    let flaky = crate::flaky::flaky_of(&mut *ex, project_id, id).await?;
    Ok(CaseHistory {
        case,
        entries,
        next_before,
        first_failure,
        last_success,
        commits_between,
        quarantine,
        flaky,
    })
}

/// Line coverage of one run on a branch.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct CoveragePoint {
    pub run: i64,
    pub job: String,
    pub sha: String,
    pub lines_covered: i64,
    pub lines_total: i64,
    pub percent: f64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub at: i64,
}

/// Line coverage of the last `limit` reporting runs on `git_ref`, oldest first.
pub async fn coverage_trend(
    ex: &mut impl Executor,
    project_id: i64,
    git_ref: &str,
    limit: i64,
) -> Result<Vec<CoveragePoint>, StoreError> {
    let rows = q(
        "SELECT run_number, job_key, sha, lines_covered, lines_total, created_at FROM test_runs \
         WHERE project_id = $1 AND git_ref = $2 AND lines_total IS NOT NULL \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(project_id)
    .bind(git_ref)
    .bind(limit.clamp(1, 1000))
    .fetch_all(ex)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let (c, t) = (r.i64("lines_covered")?, r.i64("lines_total")?);
            Ok(CoveragePoint {
                run: r.i64("run_number")?,
                job: r.text("job_key")?,
                sha: r.text("sha")?,
                lines_covered: c,
                lines_total: t,
                percent: pct(c, t),
                at: r.i64("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.reverse();
    Ok(out)
}

/// Coverage of one file in a run: instrumented lines with their hits.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct FileCoverage {
    pub path: String,
    pub lines_covered: i64,
    pub lines_total: i64,
    /// `[line, hits]`.
    pub lines: Vec<(u32, u64)>,
}

/// Per-file coverage of the pipeline run (every job's last reported attempt, merged by path:
/// a line is covered when any job covered it).
pub async fn run_coverage(
    ex: &mut impl Executor,
    build_run_id: i64,
) -> Result<Vec<FileCoverage>, StoreError> {
    let runs = latest_runs(&mut *ex, build_run_id).await?;
    let mut files: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for r in &runs {
        let rows = q("SELECT path, line_hits FROM test_coverage_files WHERE test_run_id = $1")
            .bind(r.i64("id")?)
            .fetch_all(&mut *ex)
            .await?;
        for row in rows {
            let f = files.entry(row.text("path")?).or_default();
            for pair in row.text("line_hits")?.split(',').filter(|s| !s.is_empty()) {
                if let Some((l, h)) = pair.split_once(':')
                    && let (Ok(l), Ok(h)) = (l.parse::<u32>(), h.parse::<u64>())
                {
                    *f.entry(l).or_default() += h;
                }
            }
        }
    }
    Ok(files
        .into_iter()
        .map(|(path, lines)| {
            let total = lines.len() as i64;
            let covered = lines.values().filter(|h| **h > 0).count() as i64;
            FileCoverage {
                path,
                lines_covered: covered,
                lines_total: total,
                lines: lines.into_iter().collect(),
            }
        })
        .collect())
}

/// The newest pipeline run of change request `cr_number` that reported tests:
/// `(build run id, run number)`.
pub async fn latest_run_for_cr(
    ex: &mut impl Executor,
    project_id: i64,
    repo_id: i64,
    cr_number: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    q(
        "SELECT build_run_id, run_number FROM test_runs WHERE project_id = $1 AND repo_id = $2 \
       AND cr_number = $3 ORDER BY id DESC LIMIT 1",
    )
    .bind(project_id)
    .bind(repo_id)
    .bind(cr_number)
    .fetch_optional(ex)
    .await?
    .map(|r| Ok((r.i64("build_run_id")?, r.i64("run_number")?)))
    .transpose()
}

/// Diff coverage of a change request's run: the changed lines the coverage instruments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct DiffCoverage {
    pub covered: u64,
    pub total: u64,
    /// Percentage (one decimal); none when no changed line is instrumented.
    pub percent: Option<f64>,
    /// Changed lines with zero hits, per file.
    pub uncovered: Vec<UncoveredLines>,
}

/// Uncovered changed lines of one file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct UncoveredLines {
    pub path: String,
    pub lines: Vec<u32>,
}

/// Diff coverage of `files` (a run's coverage) over `changed` lines.
pub fn diff_coverage_detail(
    files: &[FileCoverage],
    changed: &BTreeMap<String, BTreeSet<u32>>,
) -> DiffCoverage {
    let mut out = DiffCoverage::default();
    for f in files {
        let Some(lines) = changed.get(&f.path) else {
            continue;
        };
        let mut missing = Vec::new();
        for (line, hits) in &f.lines {
            if lines.contains(line) {
                out.total += 1;
                if *hits > 0 {
                    out.covered += 1;
                } else {
                    missing.push(*line);
                }
            }
        }
        if !missing.is_empty() {
            out.uncovered.push(UncoveredLines {
                path: f.path.clone(),
                lines: missing,
            });
        }
    }
    out.percent = (out.total > 0).then(|| pct(out.covered as i64, out.total as i64));
    out
}

/// Coverage marks for a change request's diff: which changed lines (new side) the newest
/// reporting run covered and which it did not. Made by [`coverage_marks`] from the run's
/// per-file coverage ([`run_coverage`]) and the changed lines of the change request at the
/// run's commit; the CR diff view marks the lines with [`CoverageMarks::class_of`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct CoverageMarks {
    /// The pipeline run whose coverage the marks come from.
    pub run: i64,
    /// The commit that run tested.
    pub sha: String,
    /// Changed lines with zero hits, per path.
    pub uncovered: BTreeMap<String, BTreeSet<u32>>,
    /// Changed lines with at least one hit, per path.
    pub covered: BTreeMap<String, BTreeSet<u32>>,
}

impl CoverageMarks {
    /// Whether `line` (new side) of `path` is an uncovered changed line.
    pub fn is_uncovered(&self, path: &str, line: u32) -> bool {
        self.uncovered.get(path).is_some_and(|s| s.contains(&line))
    }

    /// Whether `line` (new side) of `path` is a covered changed line.
    pub fn is_covered(&self, path: &str, line: u32) -> bool {
        self.covered.get(path).is_some_and(|s| s.contains(&line))
    }

    /// The CSS class for a line (new side): `cov-miss`, `cov-hit`, or "" for a line the
    /// coverage does not instrument or that did not change.
    pub fn class_of(&self, path: &str, line: u32) -> &'static str {
        if self.is_uncovered(path, line) {
            "cov-miss"
        } else if self.is_covered(path, line) {
            "cov-hit"
        } else {
            ""
        }
    }

    /// Number of uncovered changed lines over all files.
    pub fn uncovered_count(&self) -> usize {
        self.uncovered.values().map(BTreeSet::len).sum()
    }
}

/// Splits the changed lines that `files` instrument into covered and uncovered (per path).
pub fn marks_of(
    run: i64,
    sha: &str,
    files: &[FileCoverage],
    changed: &BTreeMap<String, BTreeSet<u32>>,
) -> CoverageMarks {
    let mut out = CoverageMarks {
        run,
        sha: sha.to_string(),
        ..Default::default()
    };
    for f in files {
        let Some(lines) = changed.get(&f.path) else {
            continue;
        };
        for (line, hits) in &f.lines {
            if !lines.contains(line) {
                continue;
            }
            let side = if *hits > 0 {
                &mut out.covered
            } else {
                &mut out.uncovered
            };
            side.entry(f.path.clone()).or_default().insert(*line);
        }
    }
    out
}

/// The coverage marks of change request `cr` in `repo`: from the newest run of the change
/// request that reported coverage, over the change request's changed lines at that run's
/// commit. `None` when no run reported coverage or the diff cannot be read.
pub async fn coverage_marks(
    store: &Store,
    data_dir: &std::path::Path,
    repo: &ouro_code::repos::Repo,
    cr: &ouro_code::cr::ChangeRequest,
) -> Result<Option<CoverageMarks>, StoreError> {
    let mut c = store.read().await?;
    let Some((id, number)) = latest_run_for_cr(&mut c, repo.project_id, repo.id, cr.number).await?
    else {
        return Ok(None);
    };
    let files = run_coverage(&mut c, id).await?;
    if files.is_empty() {
        return Ok(None);
    }
    let sha = ouro_build::runs::get(&mut c, repo.project_id, number)
        .await?
        .sha;
    drop(c);
    let Some(changed) = crate::hook::cr_changed_lines(data_dir, repo, cr, &sha).await else {
        return Ok(None);
    };
    Ok(Some(marks_of(number, &sha, &files, &changed)))
}
