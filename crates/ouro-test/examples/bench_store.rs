//! Storage benchmarks of the Test phase (issue 6, section 6), driven by `bench/test-store.py`.
//!
//! ```text
//! bench_store history BACKEND [RUNS] [TESTS] [QUERIES]
//! bench_store ingest BACKEND FILE
//! ```
//!
//! `BACKEND` is `sqlite` (a file in a temporary directory) or `postgres` (a fresh database on
//! `OURO_TEST_DATABASE_URL`; its name is printed as `database: NAME` so the caller can drop it).
//!
//! - `history` seeds RUNS test runs of one job on `main` with TESTS results each (plain SQL:
//!   `INSERT ... SELECT` over the cross product; about 2 % failures, spread so that no test
//!   crosses the flip-rate threshold), then times `results::case_history` of random tests with
//!   the page's limit (200) and the whole history (RUNS), and the ingestion of five more runs of
//!   TESTS results through `results::ingest` (which scores flakiness: retries, both outcomes on
//!   the commit, the flip rate over the last `flaky::WINDOW` runs of the default branch). On
//!   PostgreSQL the whole history is timed again once autovacuum has visited `test_results`
//!   (what a table in service looks like; right after one bulk load no page is all-visible).
//! - `ingest` parses FILE (JUnit) and stores it through `results::ingest` as one job attempt,
//!   timing the parse and the store separately, then stores the same report again as the job's
//!   next run (every case and flaky test already known). On PostgreSQL it also prints the CPU
//!   time of the server processes serving the database.
//!
//! Measure a release build (`cargo build --release -p ouro-test --example bench_store`); a dev
//! build leaves ouro-store, sqlx and SQLite unoptimised and is several times slower.

use std::time::{Duration, Instant};

use ouro_store::testing::TestDb;
use ouro_store::{Store, q};
use ouro_test::model::{Attempt, Case, Outcome, Report, Suite, identity_key};
use ouro_test::parse::{self, Limits};
use ouro_test::results::{self, Ingest, JobRef};

fn usage() -> ! {
    eprintln!(
        "usage: bench_store history sqlite|postgres [RUNS] [TESTS] [QUERIES]\n       bench_store ingest sqlite|postgres FILE"
    );
    std::process::exit(2)
}

async fn open(backend: &str, dir: &std::path::Path) -> (Store, i64) {
    let db = match backend {
        "sqlite" => TestDb::Sqlite,
        "postgres" => TestDb::Postgres {
            admin_url: std::env::var("OURO_TEST_DATABASE_URL")
                .expect("postgres needs OURO_TEST_DATABASE_URL"),
        },
        _ => usage(),
    };
    let url = db.fresh_url(dir).await;
    if let Some(name) = url.strip_prefix("postgres").and_then(|u| {
        u.split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string)
    }) {
        println!("database: {name}");
    }
    let migrations = [
        ouro_store::PLATFORM_MIGRATIONS,
        ouro_plan::MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
        ouro_test::MIGRATIONS,
    ]
    .concat();
    let store = Store::open(&url, &migrations).await.expect("store opens");
    let mut tx = store.begin().await.unwrap();
    let project = q(
        "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
         VALUES ('bench', 'Bench', '', 'private', 1, 1) RETURNING id",
    )
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    tx.commit().await.unwrap();
    (store, project)
}

fn job(project: i64, run: i64) -> JobRef {
    JobRef {
        project_id: project,
        build_run_id: run,
        run_number: run,
        job_id: run,
        job_key: "test".into(),
        attempt: 1,
        repo_id: Some(1),
        git_ref: "refs/heads/main".into(),
        sha: format!("sha{run}"),
        cr_number: None,
    }
}

fn main_input(report: Report) -> Ingest {
    Ingest {
        report,
        baseline_ref: Some("refs/heads/main".into()),
        default_ref: Some("refs/heads/main".into()),
        ..Ingest::default()
    }
}

fn name_of(i: i64) -> String {
    format!("test_number_{i}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn history(backend: &str, runs: i64, tests: i64, queries: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (store, project) = open(backend, dir.path()).await;
    let t0 = Instant::now();
    let mut tx = store.begin().await.unwrap();
    for i in 1..=tests {
        let name = name_of(i);
        q(
            "INSERT INTO test_cases (project_id, case_key, suite, class, name, file, created_at) \
           VALUES ($1, $2, 'bench', 'Suite', $3, NULL, 1)",
        )
        .bind(project)
        .bind(identity_key("bench", "Suite", &name))
        .bind(name)
        .execute(&mut tx)
        .await
        .unwrap();
    }
    q(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
       INSERT INTO test_runs (project_id, build_run_id, run_number, job_id, job_key, attempt, \
       repo_id, git_ref, sha, cr_number, baseline_id, total, passed, failed, skipped, errored, \
       flaky, duration_ms, errors, gate, created_at) \
       SELECT $1, i, i, i, 'test', 1, 1, 'refs/heads/main', 'sha' || CAST(i AS TEXT), NULL, NULL, \
       $3, $3, 0, 0, 0, 0, 1000, '[]', '', i FROM n",
    )
    .bind(project)
    .bind(runs)
    .bind(tests)
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    q(
        "INSERT INTO test_results (test_run_id, case_id, outcome, attempts, flaky, duration_ms, \
       message, kind, output, created_at) \
       SELECT r.id, c.id, CASE WHEN (r.id * 7 + c.id) % 50 = 0 THEN 'failed' ELSE 'passed' END, \
       1, FALSE, (r.id + c.id) % 500, NULL, NULL, NULL, r.created_at \
       FROM test_runs r CROSS JOIN test_cases c WHERE r.project_id = $1 AND c.project_id = $1 \
       ORDER BY r.id, c.id",
    )
    .bind(project)
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let n = q("SELECT COUNT(*) AS n FROM test_results")
        .fetch_one(&mut store.read().await.unwrap())
        .await
        .unwrap()
        .i64("n")
        .unwrap();
    println!(
        "seeded: {runs} runs x {tests} tests = {n} results in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    if backend == "postgres" {
        q("ANALYZE")
            .execute(&mut store.begin().await.unwrap())
            .await
            .ok();
    }
    let first = q("SELECT MIN(id) AS id FROM test_cases WHERE project_id = $1")
        .bind(project)
        .fetch_one(&mut store.read().await.unwrap())
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    for limit in [200, runs] {
        time_history(&store, project, first, tests, runs, limit, queries, "").await;
    }
    if backend == "postgres" {
        // A table filled in one go has no page marked all-visible yet, so the index-only scan
        // still reads the heap; in service, autovacuum (test migration 0005: after 1 % new
        // rows) marks them soon after a load. Measure again once it has visited the table.
        let t = Instant::now();
        if wait_for_autovacuum(&store, Duration::from_secs(900)).await {
            println!(
                "autovacuum visited test_results after {:.0} s of waiting",
                t.elapsed().as_secs_f64()
            );
            time_history(
                &store,
                project,
                first,
                tests,
                runs,
                runs,
                queries,
                " after autovacuum",
            )
            .await;
        } else {
            println!("autovacuum did not visit test_results within 15 min (is it on?)");
        }
    }
    // Flaky scoring happens at ingestion: five more runs of every test on main, one test
    // passing only on retry, one failing every other run (its flip rate over the window stays
    // under the threshold: the window still holds steady seeded runs).
    let mut times = Vec::new();
    let mut newly = 0;
    for k in 1..=5 {
        let run = runs + k;
        let cases = (1..=tests)
            .map(|i| {
                let name = name_of(i);
                let outcomes: Vec<Outcome> = match i {
                    1 => vec![Outcome::Failed, Outcome::Passed],
                    2 if k % 2 == 0 => vec![Outcome::Failed],
                    _ => vec![Outcome::Passed],
                };
                Case {
                    suite: "bench".into(),
                    class: "Suite".into(),
                    key: identity_key("bench", "Suite", &name),
                    name,
                    file: None,
                    attempts: outcomes
                        .into_iter()
                        .map(|o| Attempt {
                            outcome: o,
                            duration_ms: Some(10),
                            message: None,
                            kind: None,
                            details: None,
                            stdout: None,
                            stderr: None,
                        })
                        .collect(),
                }
            })
            .collect();
        let report = Report {
            suites: vec![Suite {
                name: "bench".into(),
                source: "junit.xml".into(),
                cases,
            }],
        };
        let t = Instant::now();
        let done = results::ingest(&store, &job(project, run), &main_input(report))
            .await
            .unwrap();
        times.push(t.elapsed());
        newly += done.newly_flaky.len();
    }
    let flaky = ouro_test::flaky::list(&mut store.read().await.unwrap(), project)
        .await
        .unwrap();
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "ingest + flaky scoring of a {tests}-test run after {runs} runs (5 runs): p50 {}, max {}; newly flaky {newly}, flaky list {}",
        ms(percentile(&sorted, 0.5)),
        ms(*sorted.last().unwrap()),
        flaky
            .iter()
            .map(|f| format!("{} ({}, {})", f.case.name, f.cause, f.score))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Times `queries` history queries of random tests with `limit` and prints p50, p99, max and the
/// CPU per query.
#[allow(clippy::too_many_arguments)]
async fn time_history(
    store: &Store,
    project: i64,
    first: i64,
    tests: i64,
    runs: i64,
    limit: i64,
    queries: usize,
    label: &str,
) {
    let mut times = Vec::with_capacity(queries);
    let mut seed: u64 = 6;
    // CPU per query does not depend on what else the machine runs; wall time does.
    let cpu0 = cpu_of("self").unwrap_or(0.0) + server_cpu(store).await.unwrap_or(0.0);
    for _ in 0..queries {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = first + ((seed >> 33) as i64 % tests);
        let t = Instant::now();
        let h = results::case_history(&mut store.read().await.unwrap(), project, id, limit)
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(h.entries.len() as i64, limit.min(runs));
    }
    let cpu = cpu_of("self").unwrap_or(0.0) + server_cpu(store).await.unwrap_or(0.0) - cpu0;
    times.sort();
    let postgres = store.backend() == ouro_store::Backend::Postgres;
    println!(
        "history (limit {limit}, {queries} queries{label}): p50 {}, p99 {}, max {}; CPU {:.2} ms per query{}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap()),
        cpu * 1000.0 / queries as f64,
        if postgres {
            " (this process + the database's backends)"
        } else {
            ""
        }
    );
}

/// Waits until PostgreSQL's autovacuum has finished a vacuum of `test_results`; false after
/// `limit`.
async fn wait_for_autovacuum(store: &Store, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        let done = q(
            "SELECT last_autovacuum IS NOT NULL AS done FROM pg_stat_user_tables \
                      WHERE relname = 'test_results'",
        )
        .fetch_one(&mut store.read().await.unwrap())
        .await
        .ok()
        .and_then(|r| r.bool("done").ok())
        .unwrap_or(false);
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    false
}

/// CPU seconds (user + system) that the server processes serving this database have used, read
/// from /proc (PostgreSQL on this machine only; clock ticks assumed 100 per second).
async fn server_cpu(store: &Store) -> Option<f64> {
    let rows = q("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_all(&mut store.read().await.ok()?)
        .await
        .ok()?;
    let mut secs = 0.0;
    for r in rows {
        secs += cpu_of(&r.i64("pid").ok()?.to_string())?;
    }
    Some(secs)
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

async fn ingest(backend: &str, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (store, project) = open(backend, dir.path()).await;
    let t = Instant::now();
    let bytes = std::fs::read(file).expect("the file reads");
    let limits = Limits {
        max_bytes: u64::MAX,
        ..Limits::default()
    };
    let report = parse::junit(file, &bytes, &limits).expect("the file parses");
    drop(bytes);
    let parsed = t.elapsed();
    let input = main_input(report);
    let cpu0 = server_cpu(&store).await;
    let t2 = Instant::now();
    let done = results::ingest(&store, &job(project, 1), &input)
        .await
        .unwrap();
    let stored = t2.elapsed();
    let cpu1 = server_cpu(&store).await;
    println!(
        "ingest: {} cases, {} newly flaky; parse {:.2} s, store {:.2} s, total {:.2} s",
        done.totals.total,
        done.newly_flaky.len(),
        parsed.as_secs_f64(),
        stored.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    // The same report as the job's next run: every case exists, every flaky test is known.
    let t3 = Instant::now();
    let again = results::ingest(&store, &job(project, 2), &input)
        .await
        .unwrap();
    let stored2 = t3.elapsed();
    let cpu2 = server_cpu(&store).await;
    println!(
        "ingest again (next run, known cases): {} cases, {} newly flaky; store {:.2} s",
        again.totals.total,
        again.newly_flaky.len(),
        stored2.as_secs_f64()
    );
    if let (Some(a), Some(b), Some(c)) = (cpu0, cpu1, cpu2) {
        println!(
            "server CPU (PostgreSQL backends): first store {:.2} s, second {:.2} s",
            b - a,
            c - b
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: i64| {
        args.get(i)
            .map(|s| s.parse::<i64>().unwrap_or_else(|_| usage()))
            .unwrap_or(d)
    };
    match (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    ) {
        (Some("history"), Some(b)) => {
            history(b, arg(2, 10_000), arg(3, 1_000), arg(4, 200) as usize).await
        }
        (Some("ingest"), Some(b)) if args.len() == 3 => ingest(b, &args[2]).await,
        _ => usage(),
    }
}
