//! Flaky tests and quarantine (tables `test_flaky`, `test_quarantine`).
//!
//! A test is flaky when
//! - it passed only on retry within one run (`cause: retry`, score 100), or
//! - it has both outcomes on the same commit across runs or attempts (`same_commit`, score 100),
//!   or
//! - on the default branch, its pass/fail flip rate over its last [`WINDOW`] results there is at
//!   least [`FLIP_THRESHOLD`] percent with at least [`MIN_RESULTS`] results (`flip_rate`; the
//!   score is the flip rate: flips between consecutive pass/fail results divided by
//!   results - 1, in percent; skipped results are ignored).
//!
//! The first detection inserts the `test_flaky` row and appends `test.flaky_detected` once (the
//! caller also files a bug work item through Plan); later detections only update `last_seen_at`,
//! the example run and the score. A quarantine (reason, expiry) keeps a test's failures visible
//! but out of the job's result and the quality gate until it expires or a maintainer ends it.

use std::collections::{BTreeMap, BTreeSet};

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use crate::results::{JobRef, TestCase, get_case, is_failure};

/// How many default-branch results the flip rate looks at.
pub const WINDOW: i64 = 20;
/// The flip rate (percent) from which a test is flaky.
pub const FLIP_THRESHOLD: i64 = 30;
/// The fewest default-branch results the flip rate needs.
pub const MIN_RESULTS: usize = 5;
/// The longest quarantine: 90 days.
pub const MAX_QUARANTINE_MS: i64 = 90 * 86_400_000;

/// A flaky test of a project.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct FlakyTest {
    pub case: TestCase,
    /// 0 to 100 (see the module docs).
    pub score: i64,
    /// `retry`, `same_commit` or `flip_rate` (the latest detection).
    pub cause: String,
    /// A pipeline run number where it flaked.
    pub example_run: i64,
    /// The bug work item filed for it (`DEMO-42`), when Plan accepted one.
    pub work_item: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub first_seen_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub last_seen_at: i64,
    pub quarantine: Option<Quarantine>,
}

/// An active quarantine.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Quarantine {
    pub case_id: i64,
    pub reason: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub expires_at: i64,
    pub created_by: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

fn flip_score(seq: &[bool]) -> Option<i64> {
    if seq.len() < MIN_RESULTS {
        return None;
    }
    let flips = seq.windows(2).filter(|w| w[0] != w[1]).count();
    Some(((flips * 100) as f64 / (seq.len() - 1) as f64).round() as i64)
}

/// Finds the tests of test run `test_run_id` that flaked (see the module docs) and records them.
/// `outcomes`: `(case id, outcome, passed only on retry)`. Returns the newly flaky ones as
/// `(case id, cause, score)`.
pub(crate) async fn detect(
    tx: &mut Tx,
    job: &JobRef,
    test_run_id: i64,
    outcomes: &[(i64, &'static str, bool)],
    on_default: bool,
    now: i64,
) -> Result<Vec<(i64, &'static str, i64)>, StoreError> {
    let mut found: BTreeMap<i64, (&'static str, i64)> = BTreeMap::new();
    for (id, _, retry) in outcomes {
        if *retry {
            found.insert(*id, ("retry", 100));
        }
    }
    // Both outcomes on this commit, across runs and attempts.
    let here: BTreeMap<i64, &str> = outcomes.iter().map(|(id, o, _)| (*id, *o)).collect();
    let other = q(
        "SELECT r.case_id, r.outcome FROM test_results r JOIN test_runs t ON t.id = r.test_run_id \
                   WHERE t.project_id = $1 AND t.sha = $2 AND t.id <> $3",
    )
    .bind(job.project_id)
    .bind(job.sha.as_str())
    .bind(test_run_id)
    .fetch_all(&mut *tx)
    .await?;
    for r in &other {
        let id = r.i64("case_id")?;
        let o = r.text("outcome")?;
        if let Some(now_o) = here.get(&id) {
            let a = is_failure(now_o);
            let b = is_failure(&o);
            if a != b && *now_o != "skipped" && o != "skipped" {
                found.entry(id).or_insert(("same_commit", 100));
            }
        }
    }
    // Flip rate on the default branch.
    if on_default {
        let ids = q(
            "SELECT id FROM test_runs WHERE project_id = $1 AND git_ref = $2 \
                     AND job_key = $3 ORDER BY id DESC LIMIT $4",
        )
        .bind(job.project_id)
        .bind(job.git_ref.as_str())
        .bind(job.job_key.as_str())
        .bind(WINDOW)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.i64("id"))
        .collect::<Result<Vec<_>, _>>()?;
        if ids.len() >= MIN_RESULTS {
            let min = *ids.iter().min().unwrap_or(&0);
            let rows = q("SELECT r.case_id, r.outcome FROM test_results r JOIN test_runs t ON t.id = r.test_run_id \
                          WHERE t.project_id = $1 AND t.git_ref = $2 AND t.job_key = $3 AND t.id >= $4 \
                          AND r.outcome <> 'skipped' ORDER BY t.id")
            .bind(job.project_id)
            .bind(job.git_ref.as_str())
            .bind(job.job_key.as_str())
            .bind(min)
            .fetch_all(&mut *tx)
            .await?;
            let mut seqs: BTreeMap<i64, Vec<bool>> = BTreeMap::new();
            for r in &rows {
                seqs.entry(r.i64("case_id")?)
                    .or_default()
                    .push(is_failure(&r.text("outcome")?));
            }
            for (id, seq) in seqs {
                if !here.contains_key(&id) {
                    continue;
                }
                if let Some(s) = flip_score(&seq)
                    && s >= FLIP_THRESHOLD
                {
                    found.entry(id).or_insert(("flip_rate", s));
                }
            }
        }
    }
    record(tx, job, &found, now).await
}

/// Rows per multi-row statement when recording flaky tests (7 parameters each).
const RECORD_BATCH: usize = 500;

/// Records the flaky tests `found` (case id -> cause, score) in bulk: an INSERT that skips
/// tests already recorded tells which are new (its RETURNING lists only inserted rows, also
/// when a concurrent ingestion recorded the same test first); the others get the latest
/// cause, example run and sighting, and keep their highest score. Returns the new ones in
/// case id order.
async fn record(
    tx: &mut Tx,
    job: &JobRef,
    found: &BTreeMap<i64, (&'static str, i64)>,
    now: i64,
) -> Result<Vec<(i64, &'static str, i64)>, StoreError> {
    let backend = tx.backend();
    let all: Vec<(i64, &'static str, i64)> =
        found.iter().map(|(id, (c, s))| (*id, *c, *s)).collect();
    let mut inserted: BTreeSet<i64> = BTreeSet::new();
    let mut rest = &all[..];
    for size in ouro_store::batch_sizes(all.len(), RECORD_BATCH) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let stmt = flaky_rows(
            backend,
            "ON CONFLICT (project_id, case_id) DO NOTHING RETURNING case_id",
            job,
            chunk,
            now,
        );
        for r in stmt.fetch_all(&mut *tx).await? {
            inserted.insert(r.i64("case_id")?);
        }
    }
    let seen_before: Vec<(i64, &'static str, i64)> = all
        .iter()
        .filter(|(id, _, _)| !inserted.contains(id))
        .copied()
        .collect();
    let mut rest = &seen_before[..];
    for size in ouro_store::batch_sizes(seen_before.len(), RECORD_BATCH) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        flaky_rows(
            backend,
            "ON CONFLICT (project_id, case_id) DO UPDATE SET \
             score = CASE WHEN excluded.score > test_flaky.score THEN excluded.score \
             ELSE test_flaky.score END, cause = excluded.cause, \
             example_run = excluded.example_run, last_seen_at = excluded.last_seen_at",
            job,
            chunk,
            now,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(all
        .into_iter()
        .filter(|(id, _, _)| inserted.contains(id))
        .collect())
}

/// A multi-row INSERT of `test_flaky` rows followed by `conflict`.
fn flaky_rows(
    backend: ouro_store::Backend,
    conflict: &str,
    job: &JobRef,
    rows: &[(i64, &'static str, i64)],
    now: i64,
) -> ouro_store::db::Q {
    let mut ph = ouro_store::Placeholders::new(backend);
    let mut stmt = q(format!(
        "INSERT INTO test_flaky (project_id, case_id, score, cause, example_run, first_seen_at, \
         last_seen_at) VALUES {} {conflict}",
        ph.rows(rows.len(), 7)
    ));
    for (id, cause, score) in rows {
        stmt = stmt
            .bind(job.project_id)
            .bind(*id)
            .bind(*score)
            .bind(*cause)
            .bind(job.run_number)
            .bind(now)
            .bind(now);
    }
    stmt
}

/// Files a bug work item for a newly flaky test through Plan (once: the caller calls it only for
/// a new `test_flaky` row) and remembers its key. A project whose Plan refuses (no `bug` type)
/// gets none; the `test.flaky_detected` event is there either way.
pub async fn file_work_item(
    store: &Store,
    project_id: i64,
    case_id: i64,
    run_number: i64,
) -> Result<Option<String>, StoreError> {
    let mut rd = store.read().await?;
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut rd)
        .await?
        .text("slug")?;
    let Some(project) = ouro_store::projects::by_slug(&mut rd, &slug).await? else {
        return Ok(None);
    };
    let case = get_case(&mut rd, project_id, case_id).await?;
    drop(rd);
    let mut title = format!("Flaky test: {}", case.name);
    if title.chars().count() > 300 {
        title = title.chars().take(300).collect();
    }
    let input = ouro_plan::items::NewItem {
        item_type: "bug".into(),
        title,
        description: format!(
            "The test `{}` was found flaky in pipeline run #{run_number}: it passed and failed on \
             the same code. See its history on the Tests page; a maintainer can quarantine it \
             while it is fixed.",
            case.key
        ),
        labels: vec!["flaky-test".into()],
        ..Default::default()
    };
    let item = match ouro_plan::items::create(store, &project, &crate::results::ACTOR, input).await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::info!(error = %e, case_id, "no work item for a flaky test");
            return Ok(None);
        }
    };
    let mut tx = store.begin().await?;
    q("UPDATE test_flaky SET work_item = $1 WHERE project_id = $2 AND case_id = $3")
        .bind(item.key.as_str())
        .bind(project_id)
        .bind(case_id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Some(item.key))
}

fn quarantine_of(r: &Row) -> Result<Quarantine, StoreError> {
    Ok(Quarantine {
        case_id: r.i64("case_id")?,
        reason: r.text("reason")?,
        expires_at: r.i64("expires_at")?,
        created_by: r.text("created_by")?,
        created_at: r.i64("created_at")?,
    })
}

/// The test's quarantine active at `now`.
pub async fn active_quarantine(
    ex: &mut impl Executor,
    project_id: i64,
    case_id: i64,
    now: i64,
) -> Result<Option<Quarantine>, StoreError> {
    q(
        "SELECT * FROM test_quarantine WHERE project_id = $1 AND case_id = $2 \
       AND ended_at IS NULL AND expires_at > $3 ORDER BY id DESC LIMIT 1",
    )
    .bind(project_id)
    .bind(case_id)
    .bind(now)
    .fetch_optional(ex)
    .await?
    .as_ref()
    .map(quarantine_of)
    .transpose()
}

fn flaky_from(r: &Row, quarantine: Option<Quarantine>) -> Result<FlakyTest, StoreError> {
    Ok(FlakyTest {
        case: TestCase {
            id: r.i64("case_id")?,
            key: r.text("case_key")?,
            suite: r.text("suite")?,
            class: r.text("class")?,
            name: r.text("name")?,
            file: r.opt_text("file")?,
        },
        score: r.i64("score")?,
        cause: r.text("cause")?,
        example_run: r.i64("example_run")?,
        work_item: r.opt_text("work_item")?,
        first_seen_at: r.i64("first_seen_at")?,
        last_seen_at: r.i64("last_seen_at")?,
        quarantine,
    })
}

const FLAKY_SELECT: &str = "SELECT f.*, c.case_key, c.suite, c.class, c.name, c.file \
     FROM test_flaky f JOIN test_cases c ON c.id = f.case_id";

/// The flaky record of one test.
pub async fn flaky_of(
    ex: &mut impl Executor,
    project_id: i64,
    case_id: i64,
) -> Result<Option<FlakyTest>, StoreError> {
    let Some(r) = q(format!(
        "{FLAKY_SELECT} WHERE f.project_id = $1 AND f.case_id = $2"
    ))
    .bind(project_id)
    .bind(case_id)
    .fetch_optional(&mut *ex)
    .await?
    else {
        return Ok(None);
    };
    let qu = active_quarantine(&mut *ex, project_id, case_id, ouro_core::time::now_ms()).await?;
    Ok(Some(flaky_from(&r, qu)?))
}

/// The project's flaky tests, highest score and most recent first.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<FlakyTest>, StoreError> {
    let rows = q(format!(
        "{FLAKY_SELECT} WHERE f.project_id = $1 ORDER BY f.score DESC, f.last_seen_at DESC, f.id LIMIT 500"
    ))
    .bind(project_id)
    .fetch_all(&mut *ex)
    .await?;
    let now = ouro_core::time::now_ms();
    let mut out = Vec::new();
    for r in &rows {
        let qu = active_quarantine(&mut *ex, project_id, r.i64("case_id")?, now).await?;
        out.push(flaky_from(r, qu)?);
    }
    Ok(out)
}

/// The project's active quarantines.
pub async fn quarantines(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Vec<(TestCase, Quarantine)>, StoreError> {
    let rows = q(
        "SELECT t.*, c.case_key, c.suite, c.class, c.name, c.file FROM test_quarantine t \
                  JOIN test_cases c ON c.id = t.case_id WHERE t.project_id = $1 \
                  AND t.ended_at IS NULL AND t.expires_at > $2 ORDER BY t.expires_at",
    )
    .bind(project_id)
    .bind(ouro_core::time::now_ms())
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                TestCase {
                    id: r.i64("case_id")?,
                    key: r.text("case_key")?,
                    suite: r.text("suite")?,
                    class: r.text("class")?,
                    name: r.text("name")?,
                    file: r.opt_text("file")?,
                },
                quarantine_of(r)?,
            ))
        })
        .collect()
}

async fn slug(tx: &mut Tx, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(tx)
        .await?
        .text("slug")
}

/// Quarantines test `case_id` until `expires_at` (Unix ms, in the future, at most
/// [`MAX_QUARANTINE_MS`] ahead) with a reason (1 to 500 characters); replaces an active one.
/// Appends `test.quarantined`.
pub async fn quarantine(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    case_id: i64,
    reason: &str,
    expires_at: i64,
) -> Result<Quarantine, StoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(
            OuroError::field("reason", "a reason of 1 to 500 characters is required").into(),
        );
    }
    let now = ouro_core::time::now_ms();
    if expires_at <= now || expires_at > now + MAX_QUARANTINE_MS {
        return Err(OuroError::field(
            "expires_at",
            "the expiry must be in the future and at most 90 days ahead",
        )
        .into());
    }
    let case = get_case(&mut store.read().await?, project_id, case_id).await?;
    let mut tx = store.begin().await?;
    q("UPDATE test_quarantine SET ended_at = $1 WHERE project_id = $2 AND case_id = $3 AND ended_at IS NULL")
        .bind(now)
        .bind(project_id)
        .bind(case_id)
        .execute(&mut tx)
        .await?;
    let by = actor.label();
    q("INSERT INTO test_quarantine (project_id, case_id, reason, expires_at, created_by, created_at) \
       VALUES ($1, $2, $3, $4, $5, $6)")
    .bind(project_id)
    .bind(case_id)
    .bind(reason)
    .bind(expires_at)
    .bind(by.as_str())
    .bind(now)
    .execute(&mut tx)
    .await?;
    let s = slug(&mut tx, project_id).await?;
    tx.append(
        NewEvent::new(
            ev::TEST_QUARANTINED,
            actor,
            case_id,
            json!({"action": "quarantined", "key": case.key, "reason": reason,
                   "expires_at": ouro_core::time::rfc3339(expires_at)}),
        )
        .in_project(project_id, &s),
    )
    .await?;
    tx.commit().await?;
    Ok(Quarantine {
        case_id,
        reason: reason.to_string(),
        expires_at,
        created_by: by,
        created_at: now,
    })
}

/// Ends test `case_id`'s active quarantine; `false` when it had none.
pub async fn end_quarantine(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    case_id: i64,
) -> Result<bool, StoreError> {
    let case = get_case(&mut store.read().await?, project_id, case_id).await?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let n = q(
        "UPDATE test_quarantine SET ended_at = $1 WHERE project_id = $2 AND case_id = $3 \
               AND ended_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(project_id)
    .bind(case_id)
    .execute(&mut tx)
    .await?;
    if n == 0 {
        return Ok(false);
    }
    let s = slug(&mut tx, project_id).await?;
    tx.append(
        NewEvent::new(
            ev::TEST_QUARANTINED,
            actor,
            case_id,
            json!({"action": "ended", "key": case.key}),
        )
        .in_project(project_id, &s),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::flip_score;

    #[test]
    fn flip_rate_needs_enough_results() {
        assert_eq!(flip_score(&[true, false, true]), None);
        assert_eq!(flip_score(&[true, false, true, false, true]), Some(100));
        assert_eq!(flip_score(&[false, false, false, false, true]), Some(25));
    }
}
