//! The local scheduler with the real shell executor in a temporary git repository: DAG order,
//! failure propagation, retry, step `if:` and env layering, cancel.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ouro_build::exec::{Checkout, Executor, ShellExecutor};
use ouro_build::local::{self, LocalOptions, Progress, RunReport};
use ouro_build::plan::{JobState, RunPlan, RunStatus, Trigger, plan};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Fixture {
    repo: tempfile::TempDir,
    work: tempfile::TempDir,
    /// Where jobs record what they did.
    log: tempfile::TempDir,
    sha: String,
}

fn fixture() -> Fixture {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("hello.txt"), "hello from the repo\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "first"]);
    let sha = git(repo.path(), &["rev-parse", "HEAD"]);
    Fixture {
        repo,
        work: tempfile::tempdir().unwrap(),
        log: tempfile::tempdir().unwrap(),
        sha,
    }
}

impl Fixture {
    fn plan(&self, yaml: &str) -> RunPlan {
        let yaml = yaml.replace("@LOG@", &self.log.path().display().to_string());
        let p = ouro_build::parse("ci.yml", yaml.as_bytes()).unwrap_or_else(|d| panic!("{d:?}"));
        plan("ci", &p, &Trigger::push("main", &self.sha)).unwrap()
    }

    async fn run(&self, rp: &RunPlan, slots: usize) -> (RunReport, Vec<Progress>) {
        let mut ex = ShellExecutor::new(self.work.path());
        ex.grace = Duration::from_millis(300);
        let ex: Arc<dyn Executor> = Arc::new(ex);
        let (mut opts, _cancel) = LocalOptions::new(slots);
        opts.checkout = Some(Checkout {
            repo: self.repo.path().to_path_buf(),
            sha: self.sha.clone(),
        });
        let mut seen = Vec::new();
        let report = local::run(rp, ex, opts, |p| seen.push(p.clone())).await;
        (report, seen)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.log.path().join(name)).unwrap_or_default()
    }
}

fn states(r: &RunReport) -> Vec<JobState> {
    r.jobs.iter().map(|j| j.state).collect()
}

fn logs(seen: &[Progress], job: usize) -> Vec<String> {
    seen.iter()
        .filter_map(|p| match p {
            Progress::Log { job: j, line } if *j == job => Some(line.clone()),
            _ => None,
        })
        .collect()
}

const DAG: &str = r#"
env:
  LOG: "@LOG@"
jobs:
  a:
    steps:
      - run: |
          echo "start a" >> "$LOG/order"
          cat hello.txt
          sleep 0.3
          echo "end a" >> "$LOG/order"
  b:
    needs: a
    steps:
      - run: |
          echo "start b" >> "$LOG/order"
          sleep 0.2
          echo "end b" >> "$LOG/order"
  c:
    needs: [a, b]
    steps:
      - run: |
          echo "start c" >> "$LOG/order"
          echo "end c" >> "$LOG/order"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_job_dag_runs_in_needs_order() {
    let f = fixture();
    let rp = f.plan(DAG);
    let (report, seen) = f.run(&rp, 3).await;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(states(&report), vec![JobState::Success; 3]);
    let order: Vec<String> = f.read("order").lines().map(str::to_string).collect();
    assert_eq!(
        order,
        ["start a", "end a", "start b", "end b", "start c", "end c"],
        "a job starts only after its needs finished"
    );
    // The checkout is the commit; output reaches the progress events as lines.
    assert!(
        logs(&seen, 0).iter().any(|l| l == "hello from the repo"),
        "{seen:?}"
    );
    // Every job was queued, started and finished; finished comes after its log lines.
    let finished_a = seen
        .iter()
        .position(|p| matches!(p, Progress::JobFinished { job: 0, .. }))
        .unwrap();
    let log_a = seen
        .iter()
        .position(|p| matches!(p, Progress::Log { job: 0, .. }))
        .unwrap();
    assert!(log_a < finished_a);
    for j in 0..3 {
        assert!(seen.contains(&Progress::JobQueued { job: j }));
        assert!(seen.contains(&Progress::JobStarted { job: j, attempt: 1 }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_skips_its_dependents_and_fails_the_run() {
    let f = fixture();
    let rp = f.plan(
        r#"
env:
  LOG: "@LOG@"
jobs:
  a:
    steps:
      - run: exit 4
  b:
    needs: a
    steps:
      - run: touch "$LOG/b-ran"
  cleanup:
    needs: a
    if: failure()
    steps:
      - run: touch "$LOG/cleanup-ran"
  other:
    steps:
      - run: 'true'
"#,
    );
    let (report, _) = f.run(&rp, 2).await;
    assert_eq!(report.status, RunStatus::Failure);
    let by_id = |id: &str| report.jobs[rp.find(id).unwrap()].clone();
    assert_eq!(by_id("a").state, JobState::Failure);
    assert_eq!(by_id("a").reason.as_deref(), Some("exit code 4"));
    assert_eq!(by_id("b").state, JobState::Skipped);
    assert_eq!(by_id("cleanup").state, JobState::Success);
    assert_eq!(by_id("other").state, JobState::Success);
    assert!(!f.log.path().join("b-ran").exists());
    assert!(f.log.path().join("cleanup-ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_step_is_retried_and_passes() {
    let f = fixture();
    let rp = f.plan(
        r#"
jobs:
  flaky:
    retry:
      max: 2
      when: [script_failure]
    steps:
      - run: |
          if [ -f "@LOG@/marker" ]; then echo second; exit 0; fi
          touch "@LOG@/marker"
          echo first
          exit 1
"#,
    );
    let (report, seen) = f.run(&rp, 1).await;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(report.jobs[0].attempts, 2);
    assert!(seen.contains(&Progress::JobStarted { job: 0, attempt: 2 }));
    let lines = logs(&seen, 0);
    assert!(lines.contains(&"first".to_string()) && lines.contains(&"second".to_string()));

    // Without retry the same step fails the run.
    let g = fixture();
    let rp = g.plan(
        "jobs:\n  flaky:\n    steps:\n      - run: |\n          if [ -f \"@LOG@/marker\" ]; then exit 0; fi\n          touch \"@LOG@/marker\"; exit 1\n",
    );
    let (report, _) = g.run(&rp, 1).await;
    assert_eq!(report.status, RunStatus::Failure);
    assert_eq!(report.jobs[0].attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_layers_step_if_and_continue_on_error() {
    let f = fixture();
    let rp = f.plan(
        r#"
env:
  A: pipeline
  B: pipeline
  C: pipeline
jobs:
  j:
    continue-on-error: true
    env:
      B: job-${{ env.A }}
      C: job
    steps:
      - run: echo "A=$A B=$B C=$C"
        env:
          C: step-${{ env.B }}
      - name: skipped on main
        if: ouro.branch != 'main'
        run: echo should-not-print
      - run: exit 2
      - name: after failure
        if: failure()
        run: echo cleanup ${{ matrix.x }}done
  next:
    needs: j
    steps:
      - run: echo next-ran
"#,
    );
    let (report, seen) = f.run(&rp, 2).await;
    let lines = logs(&seen, 0);
    assert!(
        lines.contains(&"A=pipeline B=job-pipeline C=step-job-pipeline".to_string()),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("should-not-print")));
    assert!(lines.contains(&"cleanup done".to_string()), "{lines:?}");
    assert_eq!(report.jobs[0].state, JobState::Failure);
    // continue-on-error: the run succeeds and the dependent runs.
    assert_eq!(report.jobs[1].state, JobState::Success);
    assert_eq!(report.status, RunStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_jobs_and_cancels_the_rest() {
    let f = fixture();
    let rp = f.plan(
        "jobs:\n  long:\n    steps:\n      - run: sleep 30\n  after:\n    needs: long\n    steps:\n      - run: 'true'\n",
    );
    let mut ex = ShellExecutor::new(f.work.path());
    ex.grace = Duration::from_millis(200);
    let (mut opts, cancel) = LocalOptions::new(2);
    opts.checkout = Some(Checkout {
        repo: f.repo.path().to_path_buf(),
        sha: f.sha.clone(),
    });
    let report = local::run(&rp, Arc::new(ex), opts, |p| {
        if matches!(p, Progress::StepStarted { job: 0, .. }) {
            let _ = cancel.send(true);
        }
    })
    .await;
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(
        states(&report),
        vec![JobState::Cancelled, JobState::Cancelled]
    );
    assert!(report.jobs[0].elapsed < Duration::from_secs(25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_timeouts_end_jobs_and_steps_in_seconds() {
    let f = fixture();
    // A job limit of 0.02 minutes (1.2 s) and a step limit of 0.01 minutes (0.6 s): both sleeps
    // would take a minute; the run must end long before that, with the jobs timed out.
    let rp = f.plan(
        r#"
env:
  LOG: "@LOG@"
jobs:
  job-limit:
    timeout-minutes: 0.02
    steps:
      - run: echo started >> "$LOG/job" && sleep 60 && echo finished >> "$LOG/job"
  step-limit:
    steps:
      - timeout-minutes: 0.01
        run: echo started >> "$LOG/step" && sleep 60 && echo finished >> "$LOG/step"
      - run: echo after >> "$LOG/step"
  fits:
    timeout-minutes: 0.5
    steps:
      - run: echo ok >> "$LOG/fits"
"#,
    );
    let limit = rp.jobs.iter().find(|j| j.key == "job-limit").unwrap();
    assert_eq!(limit.spec.timeout_minutes, Some(0.02));
    let started = std::time::Instant::now();
    let (report, _) = f.run(&rp, 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the sleeps were not cut short"
    );
    let by_key = |k: &str| {
        report
            .jobs
            .iter()
            .zip(&rp.jobs)
            .find(|(_, j)| j.key == k)
            .map(|(r, _)| r.state)
            .unwrap()
    };
    assert_eq!(by_key("job-limit"), JobState::TimedOut, "{report:?}");
    assert_ne!(by_key("step-limit"), JobState::Success, "{report:?}");
    assert_eq!(by_key("fits"), JobState::Success, "{report:?}");
    assert_eq!(report.status, RunStatus::Failure);
    assert_eq!(f.read("job"), "started\n");
    assert_eq!(
        f.read("step"),
        "started\n",
        "the step after a timed-out step does not run"
    );
    assert_eq!(f.read("fits"), "ok\n");
}
