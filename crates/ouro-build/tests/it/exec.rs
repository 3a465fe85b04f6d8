//! Job executors: checkout at the exact commit, the environment allow-list, failure, output
//! truncation with bounded memory, daemons, timeouts, cancel, rlimits and the sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ouro_build::exec::limits::alive;
use ouro_build::exec::{
    Checkout, ExecError, ExecEvent, Executor, JobContext, JobOutcome, JobSpec, JobStatus, Limits,
    SandboxConfig, ShellExecutor, StepSpec, StepStatus,
};
use ouro_build::logs::{JobLog, LogConfig, LogReader, LogWriter, now_ms, truncation_marker};
use ouro_build::mask::SecretSet;
use tokio::sync::mpsc;

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

/// A repository with two commits; returns (dir, first sha).
fn repo() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    git(d.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(d.path().join("first.txt"), "one\n").unwrap();
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "first"]);
    let first = git(d.path(), &["rev-parse", "HEAD"]);
    std::fs::write(d.path().join("second.txt"), "two\n").unwrap();
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "second"]);
    (d, first)
}

fn step(name: &str, run: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        run: run.into(),
        ..Default::default()
    }
}

/// The executor as the `ouro` binary sets it up: steps start through the exec wrapper.
fn executor(root: &Path) -> ShellExecutor {
    let mut e = ShellExecutor::new(root);
    e.grace = Duration::from_millis(300);
    e.exec_wrapper = Some(PathBuf::from(env!("CARGO_BIN_EXE_ouro-exec-wrapper")));
    e
}

/// Steps through the exec wrapper's second `exec` (where the kernel has no pidfds).
fn wrapping_executor(root: &Path) -> ShellExecutor {
    let mut e = executor(root);
    e.one_exec = false;
    e
}

/// The executor of a library user without a wrapper: limits set in a `pre_exec` (a fork).
fn forking_executor(root: &Path) -> ShellExecutor {
    let mut e = executor(root);
    e.exec_wrapper = None;
    e
}

/// What the event consumer saw: non-log events, the first MiB of log text and the total.
#[derive(Default, Debug)]
struct Seen {
    events: Vec<ExecEvent>,
    log: Vec<u8>,
    total: u64,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.log).into_owned()
    }
}

async fn run(ex: &dyn Executor, job: &JobSpec) -> (Result<JobOutcome, ExecError>, Seen) {
    let (ctx, rx, _cancel) = JobContext::channel(16);
    let consumer = tokio::spawn(consume(rx));
    let r = ex.run(job, ctx).await;
    (r, consumer.await.unwrap())
}

async fn consume(mut rx: mpsc::Receiver<ExecEvent>) -> Seen {
    let mut s = Seen::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            ExecEvent::Log { data, .. } => {
                s.total += data.len() as u64;
                let room = (1usize << 20).saturating_sub(s.log.len());
                s.log.extend_from_slice(&data[..room.min(data.len())]);
            }
            other => s.events.push(other),
        }
    }
    s
}

fn read_pid(p: PathBuf) -> i32 {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_steps_see_the_exact_commit_and_only_allowed_environment() {
    let (repo, first) = repo();
    let root = tempfile::tempdir().unwrap();
    assert!(
        std::env::var("CARGO_MANIFEST_DIR").is_ok(),
        "the test process has a host variable to hide"
    );
    let mut job = JobSpec {
        id: "j1".into(),
        checkout: Some(Checkout {
            repo: repo.path().to_path_buf(),
            sha: first.clone(),
        }),
        env: BTreeMap::from([("JOB_VAR".to_string(), "job value".to_string())]),
        ..Default::default()
    };
    job.steps.push(step(
        "checkout",
        &format!(
            "test \"$(git rev-parse HEAD)\" = {first}\n\
             test -f first.txt\n\
             test ! -e second.txt\n\
             test -z \"$(git status --porcelain)\"\n\
             git remote get-url origin\n\
             git cat-file -e {first}^{{tree}}\n\
             echo checked out $(git rev-parse --short HEAD)\n\
             git -c user.name=J -c user.email=j@example.com commit -q --allow-empty -m local\n\
             git switch -q -c topic && git tag v-local\n\
             git repack -q -d -l && test -n \"$(ls .git/objects/pack/*.pack)\"\n\
             test \"$(git rev-parse topic)\" = \"$(git rev-parse v-local)\"\n\
             git reset -q --hard {first}\n"
        ),
    ));
    let mut s2 = step(
        "env",
        "test -z \"${CARGO_MANIFEST_DIR:-}\" || { echo host variable visible; exit 9; }\n\
         test \"$JOB_VAR\" = 'job value'\n\
         test \"$STEP_VAR\" = step\n\
         test \"$CI\" = true && test \"$OURO\" = true && test \"$TERM\" = dumb\n\
         case \"$HOME\" in \"$OURO_WORKSPACE\"/../home) ;; *) case \"$HOME\" in */home) ;; *) exit 8;; esac;; esac\n\
         test \"$PWD\" = \"$OURO_WORKSPACE/sub\"\n\
         touch \"$TMPDIR/x\"\n\
         echo env ok; echo to stderr >&2\n",
    );
    s2.env.insert("STEP_VAR".into(), "step".into());
    s2.working_directory = Some("sub".into());
    // The working directory must exist: the first step creates it.
    job.steps[0].run.push_str("mkdir sub\n");
    job.steps.push(s2);
    let ex = executor(root.path());
    let (r, seen) = run(&ex, &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Success, "{}", seen.text());
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.steps.len(), 2);
    assert!(seen.text().contains("checked out"), "{}", seen.text());
    assert!(
        seen.text().contains("env ok\nto stderr\n"),
        "{}",
        seen.text()
    );
    assert!(
        matches!(&seen.events[0], ExecEvent::StepStarted { index: 0, name } if name == "checkout")
    );
    assert!(seen.events.iter().any(|e| matches!(
        e,
        ExecEvent::StepFinished {
            index: 1,
            status: StepStatus::Success,
            exit_code: Some(0),
            ..
        }
    )));
    // The job directory is gone.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_stops_the_job_with_its_exit_code() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("ran");
    let job = JobSpec {
        id: "fail".into(),
        steps: vec![
            step("bad", "echo before; exit 3; echo after"),
            step("never", &format!("touch {}", marker.display())),
        ],
        ..Default::default()
    };
    let ex = executor(&root.path().join("work"));
    let (r, seen) = run(&ex, &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Failure);
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.steps[0].status, StepStatus::Failure);
    assert_eq!(out.steps[1].status, StepStatus::Skipped);
    assert!(!marker.exists());
    assert_eq!(seen.text(), "before\n");
    assert!(seen.events.contains(&ExecEvent::StepSkipped { index: 1 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checkout_fails_with_a_reason() {
    let (repo, _) = repo();
    let root = tempfile::tempdir().unwrap();
    let job = JobSpec {
        id: "badsha".into(),
        checkout: Some(Checkout {
            repo: repo.path().to_path_buf(),
            sha: "0".repeat(40),
        }),
        steps: vec![step("s", "true")],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Failure);
    assert!(
        out.reason.as_deref().unwrap().contains("checkout"),
        "{out:?}"
    );
    assert!(out.steps.is_empty());
    assert!(seen.text().contains("ouro: checkout of"), "{}", seen.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_jobs_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut job = JobSpec {
        id: "ok".into(),
        steps: vec![step("s", "true")],
        ..Default::default()
    };
    job.steps[0].working_directory = Some("../escape".into());
    let (r, _) = run(&ex, &job).await;
    assert!(matches!(r, Err(ExecError::Invalid(_))), "{r:?}");
    job.steps[0].working_directory = None;
    job.env.insert("BAD-NAME".into(), "x".into());
    let (r, _) = run(&ex, &job).await;
    assert_eq!(r.unwrap_err().code(), "build.job_invalid");
    job.env.clear();
    job.id = "../x".into();
    let (r, _) = run(&ex, &job).await;
    assert!(matches!(r, Err(ExecError::Invalid(_))));
    job.id = "ok".into();
    job.require_sandbox = true;
    let (r, _) = run(&ex, &job).await;
    let e = r.unwrap_err();
    assert!(matches!(e, ExecError::Refused(_)), "{e:?}");
    assert_eq!(e.code(), "build.executor_refused");
}

fn vm_hwm_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 200 MB of output through the executor into the log store: truncated at the cap with the
/// marker, and the process's peak memory grows by far less than the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_truncated_with_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let logdir = root.path().join("log");
    let job = JobSpec {
        id: "big".into(),
        steps: vec![step(
            "print",
            "set +o pipefail\nyes 'a line of build output that goes on and on' | head -c 200000000",
        )],
        ..Default::default()
    };
    let before = vm_hwm_kb();
    let (ctx, mut rx, _cancel) = JobContext::channel(8);
    let dir = logdir.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let w = LogWriter::create(
            &dir,
            LogConfig {
                cap_bytes: 4 << 20,
                ..LogConfig::default()
            },
        )
        .unwrap();
        // The output goes through the masker too, as in a runner.
        let mut log = JobLog::new(w, SecretSet::new(["goes on and on"]).unwrap());
        while let Some(ev) = rx.blocking_recv() {
            log.handle(&ev, now_ms()).unwrap();
        }
        log.finish().unwrap()
    });
    let ex = executor(&root.path().join("work"));
    let out = ex.run(&job, ctx).await.unwrap();
    let meta = writer.await.unwrap();
    let after = vm_hwm_kb();
    assert_eq!(out.status, JobStatus::Success);
    // "goes on and on" (14 bytes) became "***" (3 bytes) in each 43-byte line; the last, cut
    // line holds no whole secret.
    let (lines, partial) = (200_000_000u64 / 43, 200_000_000u64 % 43);
    assert!(partial < 42);
    assert_eq!(meta.received, lines * 32 + partial);
    assert!(meta.truncated);
    let r = LogReader::open(&logdir).unwrap();
    let all = r.read_all().unwrap();
    assert_eq!(
        all.len() as u64,
        (4 << 20) + truncation_marker(4 << 20).len() as u64
    );
    assert!(all.ends_with(&truncation_marker(4 << 20)));
    assert!(all.starts_with(b"a line of build output that ***\n"));
    let sections = r.sections().unwrap();
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].name, "print");
    assert_eq!(sections[0].exit_code, Some(0));
    // The reader above holds ~4 MiB; 200 MB never were in memory.
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "peak RSS grew by {} kB",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_does_not_outlive_its_step() {
    let root = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let p1 = pids.path().join("p1");
    let p2 = pids.path().join("p2");
    let job = JobSpec {
        id: "daemon".into(),
        steps: vec![
            step(
                "fork",
                &format!(
                    "nohup sleep 300 >/dev/null 2>&1 &\necho $! > {}\n( sleep 301 & echo $! > {} )\necho started\n",
                    p1.display(),
                    p2.display()
                ),
            ),
            step("next", "echo next"),
        ],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Success, "{}", seen.text());
    assert_eq!(seen.text(), "started\nnext\n");
    for p in [p1, p2] {
        let pid = read_pid(p);
        assert!(!alive(pid), "process {pid} survived the job");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_timeout_kills_everything() {
    let root = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let p = pids.path().join("p");
    let job = JobSpec {
        id: "slow".into(),
        timeout: Some(Duration::from_secs(1)),
        steps: vec![
            step(
                "hang",
                &format!(
                    "sleep 300 &\necho $! > {}\necho waiting\nsleep 300\n",
                    p.display()
                ),
            ),
            step("after", "echo after"),
        ],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::TimedOut, "{}", seen.text());
    assert_eq!(out.steps[0].status, StepStatus::TimedOut);
    assert_eq!(out.steps[1].status, StepStatus::Skipped);
    assert!(
        seen.text().contains("ouro: the job timed out"),
        "{}",
        seen.text()
    );
    assert!(!seen.text().lines().any(|l| l == "after"));
    assert!(!alive(read_pid(p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_fails_the_step_with_a_log_line() {
    let root = tempfile::tempdir().unwrap();
    let mut s = step("hang", "sleep 300");
    s.timeout = Some(Duration::from_millis(500));
    let job = JobSpec {
        id: "steptimeout".into(),
        steps: vec![s],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Failure);
    assert_eq!(out.steps[0].status, StepStatus::TimedOut);
    assert!(
        seen.text().contains("step \"hang\" timed out after 0.5s"),
        "{}",
        seen.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_running_step() {
    let root = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let p = pids.path().join("p");
    let job = JobSpec {
        id: "cancel".into(),
        steps: vec![step(
            "wait",
            &format!("echo $$ > {}\necho ready\nsleep 300\n", p.display()),
        )],
        ..Default::default()
    };
    let ex = executor(root.path());
    let (ctx, mut rx, cancel) = JobContext::channel(16);
    let watcher = tokio::spawn(async move {
        let mut text = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let ExecEvent::Log { data, .. } = ev {
                text.extend_from_slice(&data);
                if text.ends_with(b"ready\n") {
                    cancel.send(true).unwrap();
                }
            }
        }
        String::from_utf8(text).unwrap()
    });
    let out = ex.run(&job, ctx).await.unwrap();
    let text = watcher.await.unwrap();
    assert_eq!(out.status, JobStatus::Cancelled, "{text}");
    assert_eq!(out.steps[0].status, StepStatus::Cancelled);
    assert!(text.contains("ouro: the job was cancelled"), "{text}");
    assert!(!alive(read_pid(p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rlimits_are_set_for_steps() {
    let root = tempfile::tempdir().unwrap();
    let job = JobSpec {
        id: "limits".into(),
        limits: Limits {
            memory_bytes: Some(512 << 20),
            processes: Some(200),
            open_files: Some(32),
            cpu_seconds: Some(60),
        },
        steps: vec![step(
            "check",
            "test \"$(ulimit -n)\" = 32\n\
             test \"$(ulimit -u)\" = 200\n\
             test \"$(ulimit -t)\" = 60\n\
             test \"$(ulimit -d)\" = $((512 * 1024))\n\
             if (exec 40</dev/null) 2>/dev/null; then echo nofile not enforced; exit 1; fi\n\
             echo limits ok\n",
        )],
        ..Default::default()
    };
    // Through the exec wrapper (as the server runs steps) and through a fork (a library user).
    for ex in [executor(root.path()), forking_executor(root.path())] {
        let (r, seen) = run(&ex, &job).await;
        let out = r.unwrap();
        assert_eq!(out.status, JobStatus::Success, "{}", seen.text());
        assert_eq!(seen.text(), "limits ok\n");
    }
}

/// A step over its file or CPU limit fails, with the same exit code and output whether it was
/// started through the exec wrapper or a fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_over_its_limits_fails_the_same_way_with_or_without_the_wrapper() {
    let root = tempfile::tempdir().unwrap();
    let files = JobSpec {
        id: "nofile".into(),
        limits: Limits {
            open_files: Some(32),
            ..Limits::default()
        },
        steps: vec![step("many files", "exec 40</dev/null\necho not reached\n")],
        ..Default::default()
    };
    let cpu = JobSpec {
        id: "cpu".into(),
        limits: Limits {
            cpu_seconds: Some(1),
            ..Limits::default()
        },
        steps: vec![step("spin", "while :; do :; done\n")],
        ..Default::default()
    };
    let mut seen_by_mode = Vec::new();
    for ex in [
        executor(root.path()),
        wrapping_executor(root.path()),
        forking_executor(root.path()),
    ] {
        let (r, seen) = run(&ex, &files).await;
        let out = r.unwrap();
        assert_eq!(out.status, JobStatus::Failure, "{}", seen.text());
        assert_eq!(out.exit_code, Some(1), "{}", seen.text());
        assert!(
            seen.text().contains("Bad file descriptor"),
            "{}",
            seen.text()
        );
        assert!(!seen.text().contains("not reached"), "{}", seen.text());
        let (r, spun) = run(&ex, &cpu).await;
        let out = r.unwrap();
        assert_eq!(out.status, JobStatus::Failure, "{}", spun.text());
        // Soft and hard limit are one value: the kernel sends SIGKILL at once (128 + 9).
        assert_eq!(out.exit_code, Some(137), "{}", spun.text());
        seen_by_mode.push((
            seen.text().replace(&*root.path().to_string_lossy(), "ROOT"),
            spun.text(),
        ));
    }
    // The job directory's name differs per run; the messages do not.
    let strip = |t: &str| {
        t.lines()
            .map(|l| {
                l.split_once("step-0")
                    .map_or(l, |(_, rest)| rest)
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    for other in &seen_by_mode[1..] {
        assert_eq!(strip(&seen_by_mode[0].0), strip(&other.0));
        assert_eq!(seen_by_mode[0].1, other.1);
    }
}

/// The sandbox is required where CI runs; elsewhere a missing bwrap skips loudly.
fn sandbox_or_skip() -> Option<SandboxConfig> {
    let cfg = SandboxConfig::default();
    match cfg.available() {
        Ok(()) => Some(cfg),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("the sandbox must be available in CI: {why}");
            }
            eprintln!("SKIPPED: sandbox test: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_hides_the_data_dir_keeps_tmp_private_and_cuts_the_network() {
    let Some(mut cfg) = sandbox_or_skip() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("secret.key"), "k").unwrap();
    // The repository lives in the data dir, as hosted repositories do.
    let (repo_tmp, first) = repo();
    let repo = data.path().join("repo");
    std::fs::rename(repo_tmp.path(), &repo).unwrap();
    cfg.hidden.push(data.path().to_path_buf());
    let host_tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut ex = ShellExecutor::sandboxed(root.path(), cfg);
    ex.grace = Duration::from_millis(300);
    assert_eq!(ex.name(), "sandbox");
    let mut job = JobSpec {
        id: "sb".into(),
        checkout: Some(Checkout {
            repo: repo.clone(),
            sha: first.clone(),
        }),
        require_sandbox: true,
        network: false,
        steps: vec![step(
            "inside",
            &format!(
                "test -f first.txt\n\
                 test \"$(git rev-parse HEAD)\" = {first}\n\
                 git log --oneline >/dev/null\n\
                 test ! -e {repo}/.git/config || {{ echo repo config visible; exit 6; }}\n\
                 if touch {repo}/.git/objects/x 2>/dev/null; then echo objects writable; exit 7; fi\n\
                 touch built.txt\n\
                 test ! -e {data}/secret.key || {{ echo data dir visible; exit 2; }}\n\
                 test ! -e {host_tmp} || {{ echo host tmp visible; exit 3; }}\n\
                 touch /tmp/from-sandbox\n\
                 if touch /usr/ouro-write-test 2>/dev/null; then echo host writable; exit 4; fi\n\
                 test \"$(grep -c : /proc/net/dev)\" = 1 || {{ cat /proc/net/dev; exit 5; }}\n\
                 echo sandbox ok\n",
                data = data.path().display(),
                host_tmp = host_tmp.path().display(),
                repo = repo.display(),
            ),
        )],
        ..Default::default()
    };
    let (r, seen) = run(&ex, &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Success, "{}", seen.text());
    assert_eq!(seen.text(), "sandbox ok\n");
    assert!(!Path::new("/tmp/from-sandbox").exists());
    assert!(!Path::new("/usr/ouro-write-test").exists());
    // With the network on, the host's interfaces are there again.
    job.network = true;
    job.steps = vec![step("net", "grep -c : /proc/net/dev")];
    let (r, seen) = run(&ex, &job).await;
    assert_eq!(r.unwrap().status, JobStatus::Success);
    let _ = seen;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_daemon_dies_with_the_step() {
    let Some(cfg) = sandbox_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut ex = ShellExecutor::sandboxed(root.path(), cfg);
    ex.grace = Duration::from_millis(300);
    let job = JobSpec {
        id: "sbdaemon".into(),
        timeout: Some(Duration::from_secs(1)),
        steps: vec![step("hang", "sleep 3117 & sleep 3118")],
        ..Default::default()
    };
    let (r, _) = run(&ex, &job).await;
    assert_eq!(r.unwrap().status, JobStatus::TimedOut);
    // No `sleep 3117`/`sleep 3118` left anywhere on the machine from this job.
    let left = Command::new("pgrep")
        .args(["-f", "^sleep 311[78]$"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_leaves_the_group_is_killed_too() {
    let root = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let p = pids.path().join("p");
    let job = JobSpec {
        id: "setsid".into(),
        steps: vec![step(
            "escape",
            &format!(
                "setsid sh -c 'echo $$ > {}; exec sleep 3121' >/dev/null 2>&1 < /dev/null &\n\
                 for i in $(seq 1 100); do test -s {} && break; sleep 0.05; done\n\
                 echo escaped\n",
                p.display(),
                p.display()
            ),
        )],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    assert_eq!(r.unwrap().status, JobStatus::Success, "{}", seen.text());
    let pid = read_pid(p);
    assert!(!alive(pid), "the setsid process {pid} survived the job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_hook_decides_and_continue_on_error_keeps_going() {
    let root = tempfile::tempdir().unwrap();
    let mut soft = step("soft", "exit 4");
    soft.continue_on_error = true;
    let job = JobSpec {
        id: "hook".into(),
        steps: vec![
            soft,
            step("after-soft", "echo after-soft"),
            step("hard", "exit 5"),
            step("normal", "echo normal"),
            step("always", "echo always"),
        ],
        ..Default::default()
    };
    let (mut ctx, rx, _cancel) = JobContext::channel(16);
    // `if: always()` on the step named "always"; the default rule for the others.
    ctx.should_run = Some(std::sync::Arc::new(
        |s: &StepSpec, st: ouro_build::exec::StepState| s.name == "always" || !st.job_failed,
    ));
    let consumer = tokio::spawn(consume(rx));
    let out = executor(root.path()).run(&job, ctx).await.unwrap();
    let seen = consumer.await.unwrap();
    assert_eq!(out.status, JobStatus::Failure);
    assert_eq!(out.exit_code, Some(5));
    let st: Vec<StepStatus> = out.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        st,
        [
            StepStatus::Failure,
            StepStatus::Success,
            StepStatus::Failure,
            StepStatus::Skipped,
            StepStatus::Success
        ]
    );
    assert_eq!(seen.text(), "after-soft\nalways\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_cannot_run_refuses_instead_of_running_unsandboxed() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("ran");
    let cfg = SandboxConfig {
        bwrap: PathBuf::from("/nonexistent/bwrap"),
        hidden: Vec::new(),
    };
    let ex = ShellExecutor::sandboxed(root.path().join("work"), cfg);
    let why = ex.available().unwrap_err();
    assert!(why.contains("not installed"), "{why}");
    let job = JobSpec {
        id: "nosandbox".into(),
        require_sandbox: true,
        steps: vec![step("s", &format!("touch {}", marker.display()))],
        ..Default::default()
    };
    let (r, _) = run(&ex, &job).await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ExecError::Refused(m) if m.contains("sandbox is not available")),
        "{e:?}"
    );
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logged_masks_secrets_and_records_sections() {
    let root = tempfile::tempdir().unwrap();
    let logdir = root.path().join("log");
    let mut job = JobSpec {
        id: "logged".into(),
        steps: vec![
            step(
                "one",
                "echo \"token=$API_TOKEN\"\necho \"$API_TOKEN\" | base64\n",
            ),
            step("two", "printf 'no newline at the end'"),
        ],
        ..Default::default()
    };
    job.env
        .insert("API_TOKEN".into(), "tok-1234567890-secret".into());
    let log = JobLog::new(
        LogWriter::create(&logdir, LogConfig::default()).unwrap(),
        SecretSet::new(["tok-1234567890-secret"]).unwrap(),
    );
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let ex = executor(&root.path().join("work"));
    let run = ouro_build::exec::run_logged(&ex, &job, log, cancel, None)
        .await
        .unwrap();
    assert_eq!(run.outcome.status, JobStatus::Success);
    let r = LogReader::open(&logdir).unwrap();
    let text = String::from_utf8(r.read_all().unwrap()).unwrap();
    assert!(!text.contains("tok-1234567890-secret"), "{text}");
    assert!(text.starts_with("token=***\n"), "{text}");
    assert!(text.ends_with("no newline at the end"), "{text}");
    // The base64 line: only edge characters of the encoding are left around the mask.
    let b64_line = text.lines().nth(1).unwrap();
    assert!(
        b64_line.contains("***") && b64_line.len() <= 3 + 6,
        "{b64_line}"
    );
    let s = r.sections().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].name.as_str(), s[0].start), ("one", 0));
    assert_eq!(s[0].end, Some(s[1].start));
    assert_eq!(s[1].end, Some(r.len()));
    assert_eq!(run.log.stored, r.len());
    assert!(r.meta().unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_stops_a_greedy_step() {
    let root = tempfile::tempdir().unwrap();
    let job = JobSpec {
        id: "memory".into(),
        limits: Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        },
        steps: vec![step(
            "greedy",
            "perl -e '$x = \"a\" x (300 * 1024 * 1024); print \"allocated\\n\"' 2>/dev/null && exit 1\n\
             perl -e '$x = \"a\" x (8 * 1024 * 1024); print \"small is fine\\n\"'\n",
        )],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    let out = r.unwrap();
    assert_eq!(out.status, JobStatus::Success, "{}", seen.text());
    assert_eq!(seen.text(), "small is fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shell_or_directory_fails_the_step_not_the_runner() {
    let root = tempfile::tempdir().unwrap();
    let mut s = step("odd shell", "true");
    s.shell = Some("no-such-shell-ouro {0}".into());
    let mut d = step("missing dir", "true");
    d.working_directory = Some("not/there".into());
    let mut py = step("custom", "print('from perl')");
    py.shell = Some("perl {0}".into());
    for (st, want) in [(s, "cannot start no-such-shell-ouro"), (d, "cannot start")] {
        let job = JobSpec {
            id: "missing".into(),
            steps: vec![st],
            ..Default::default()
        };
        let (r, seen) = run(&executor(root.path()), &job).await;
        let out = r.unwrap();
        assert_eq!(out.status, JobStatus::Failure);
        assert_eq!(out.exit_code, Some(127));
        assert!(seen.text().contains(want), "{}", seen.text());
    }
    let job = JobSpec {
        id: "custom".into(),
        steps: vec![py],
        ..Default::default()
    };
    let (r, seen) = run(&executor(root.path()), &job).await;
    assert_eq!(r.unwrap().status, JobStatus::Success);
    assert_eq!(seen.text(), "from perl");
}

/// Set for the child copy of the test binary that plays the runner in
/// `a_step_dies_with_its_runner_when_the_runner_is_killed`: the directory for its pid files.
const RUNNER_DIR: &str = "OURO_TEST_PDEATHSIG_DIR";
/// Set (with [`RUNNER_DIR`]) when that child runner starts steps with a fork, not the wrapper.
const RUNNER_FORKS: &str = "OURO_TEST_PDEATHSIG_FORKS";

/// In the child copy only: runs a job whose step starts a background sleep and waits, after
/// writing the pids. Returns at once in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdeathsig_runner_child() {
    let Some(dir) = std::env::var_os(RUNNER_DIR).map(PathBuf::from) else {
        return;
    };
    let root = dir.join("work");
    std::fs::create_dir_all(&root).unwrap();
    let job = JobSpec {
        id: "orphan".into(),
        steps: vec![step(
            "hang",
            &format!(
                "sleep 600 & echo $! > {d}/bg.tmp && mv {d}/bg.tmp {d}/bg\necho $$ > {d}/sh.tmp && mv {d}/sh.tmp {d}/sh\nwait\n",
                d = dir.display()
            ),
        )],
        ..Default::default()
    };
    let ex = match std::env::var(RUNNER_FORKS).as_deref() {
        Ok("fork") => forking_executor(&root),
        Ok("wrapper") => wrapping_executor(&root),
        _ => executor(&root),
    };
    let _ = run(&ex, &job).await;
}

#[test]
fn a_step_dies_with_its_runner_when_the_runner_is_killed() {
    // Steps started with one exec (the runner's watchdog), through the exec wrapper (a watchdog
    // per step), then through a fork.
    for mode in ["one-exec", "wrapper", "fork"] {
        step_dies_with_its_runner(mode);
    }
}

fn step_dies_with_its_runner(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Command::new(std::env::current_exe().unwrap())
        .args([
            "exec::pdeathsig_runner_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RUNNER_DIR, dir.path())
        .env(RUNNER_FORKS, mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(dir.path().join("bg").exists() && dir.path().join("sh").exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the child runner did not start its step"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sh = read_pid(dir.path().join("sh"));
    let bg = read_pid(dir.path().join("bg"));
    assert!(alive(sh) && alive(bg), "the step runs");
    // kill -9: the runner gets no chance to clean up.
    runner.kill().unwrap();
    runner.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(sh) || alive(bg) {
        assert!(
            std::time::Instant::now() < deadline,
            "the step (shell {sh}: {}, background sleep {bg}: {}) outlived its killed runner",
            alive(sh),
            alive(bg)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With a cache directory the commit is checked out once and each job gets a copy: what a job
/// changes (files, a new commit, the index) is not seen by the next job of the same commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_checkout_a_job_changed_does_not_leak_into_the_next_job() {
    let (src, first) = repo();
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut ex = executor(root.path());
    ex.cache_dir = Some(cache.path().to_path_buf());
    let job = |id: &str, script: String| JobSpec {
        id: id.into(),
        checkout: Some(Checkout {
            repo: src.path().to_path_buf(),
            sha: first.clone(),
        }),
        steps: vec![step("s", &script)],
        ..Default::default()
    };
    let pristine = format!(
        "test \"$(cat first.txt)\" = one\n\
         test ! -e second.txt\n\
         test ! -e new.txt\n\
         test \"$(git rev-parse HEAD)\" = {first}\n\
         test -z \"$(git status --porcelain)\"\n\
         echo pristine\n"
    );
    let writer = format!(
        "{pristine}echo changed > first.txt\n\
         chmod +x first.txt\n\
         touch new.txt\n\
         git add -A\n\
         git -c user.name=T -c user.email=t@example.com commit -qm local\n\
         rm .git/index\n"
    );
    for (id, script) in [("writer", writer), ("reader", pristine.clone())] {
        let (r, seen) = run(&ex, &job(id, script)).await;
        let out = r.unwrap();
        assert_eq!(out.status, JobStatus::Success, "{id}: {}", seen.text());
        assert_eq!(seen.text(), "pristine\n", "{id}");
    }
    // One tree, checked out once; the job directories are gone (removed in the background).
    let trees: Vec<_> = std::fs::read_dir(cache.path().join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    assert!(trees[0].starts_with(&first), "{trees:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(root.path()).unwrap().count() > 0
        || std::fs::read_dir(cache.path().join("trash"))
            .unwrap()
            .count()
            > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "job directories were not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
