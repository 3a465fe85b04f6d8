//! `ouro run`: runs a checkout's pipelines on this machine, without a server.
//!
//! The same parser, planner (`ouro_build::plan`), scheduler (`ouro_build::local`) and shell
//! executor as the server's runners. Jobs check out the committed state of `HEAD` (a local clone
//! with shared objects); the pipeline files are read from the work tree. Exit status: 0 when
//! every run succeeded, 1 when a pipeline is invalid or a run failed or was cancelled, 2 on a
//! usage error.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ouro_build::exec::{Checkout, Executor, SandboxConfig, ShellExecutor, StepStatus};
use ouro_build::local::{self, LocalOptions, Progress};
use ouro_build::plan::{self, EventKind, JobState, PlanError, RunPlan, RunStatus, Trigger};

#[derive(Args)]
pub struct RunArgs {
    /// Run only this job and the jobs it needs (a job id, or one matrix expansion like
    /// `build (linux)`); repeatable.
    #[arg(long = "job", value_name = "ID")]
    jobs: Vec<String>,
    /// Run only this pipeline file (default: every .ouro/pipelines/*.yml); repeatable.
    #[arg(long = "file", value_name = "F")]
    files: Vec<PathBuf>,
    /// Jobs running at the same time (default: the number of cores).
    #[arg(long, value_name = "N")]
    slots: Option<usize>,
    /// The event to plan for.
    #[arg(long, default_value = "push", value_parser = ["push", "manual"])]
    event: String,
    /// A manual input (`--event manual`); repeatable.
    #[arg(long = "input", value_name = "K=V")]
    inputs: Vec<String>,
    /// Do not print the jobs' logs.
    #[arg(long, short)]
    quiet: bool,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn fmt_elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn symbol(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "·",
        JobState::Running => "▶",
        JobState::Success => "✓",
        JobState::Failure | JobState::TimedOut => "✗",
        JobState::Cancelled => "⊘",
        JobState::Skipped => "-",
    }
}

/// Runs the command and returns the exit status.
pub fn run(args: RunArgs) -> i32 {
    let cwd = PathBuf::from(".");
    let Some(root) = git(&cwd, &["rev-parse", "--show-toplevel"]) else {
        eprintln!("error: not in a git repository: run `ouro run` in a repository checkout");
        return 2;
    };
    let root = PathBuf::from(root);
    let Some(sha) = git(&root, &["rev-parse", "--verify", "-q", "HEAD"]) else {
        eprintln!("error: the repository has no commit yet: jobs run on the committed HEAD");
        return 2;
    };
    let branch = git(&root, &["symbolic-ref", "--short", "-q", "HEAD"]);

    let mut inputs = BTreeMap::new();
    for kv in &args.inputs {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("error: --input {kv:?}: expected KEY=VALUE");
            return 2;
        };
        inputs.insert(k.to_string(), v.to_string());
    }
    let event = EventKind::parse(&args.event).unwrap_or(EventKind::Push);
    if !inputs.is_empty() && event != EventKind::Manual {
        eprintln!("error: --input needs --event manual");
        return 2;
    }

    // The files, named relative to the repository root in diagnostics.
    let files: Vec<PathBuf> = if args.files.is_empty() {
        match crate::lint::discover(&root) {
            Ok(f) if !f.is_empty() => f,
            _ => {
                eprintln!(
                    "error: no pipeline files: {} has no .ouro/pipelines/*.yml",
                    root.display()
                );
                return 2;
            }
        }
    } else {
        args.files.clone()
    };
    let mut pipelines = Vec::new();
    let mut errors = 0usize;
    let stdout = std::io::stdout();
    for f in &files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return 2;
            }
        };
        let name = f
            .canonicalize()
            .ok()
            .and_then(|p| {
                let r = root.canonicalize().ok()?;
                p.strip_prefix(r).ok().map(Path::to_path_buf)
            })
            .unwrap_or_else(|| f.clone())
            .display()
            .to_string();
        match ouro_build::parse(&name, &bytes) {
            Ok(p) => {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.clone());
                pipelines.push((name, stem, p));
            }
            Err(diags) => {
                let text = std::str::from_utf8(&bytes).ok();
                for d in &diags {
                    errors += usize::from(d.is_error());
                    eprintln!("{}", d.render(text));
                    println!("{}", d.one_line());
                }
            }
        }
    }
    if errors > 0 {
        eprintln!(
            "error: {errors} error{} in the pipeline files; nothing was run",
            if errors == 1 { "" } else { "s" }
        );
        return 1;
    }

    if git(&root, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty())
    {
        eprintln!(
            "note: the work tree has uncommitted changes; jobs run on the committed state of HEAD ({})",
            &sha[..sha.len().min(12)]
        );
    }

    let repo = root
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let actor = git(&root, &["config", "user.name"])
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let trigger = Trigger {
        event,
        git_ref: branch
            .as_ref()
            .map_or_else(|| "HEAD".to_string(), |b| format!("refs/heads/{b}")),
        branch: branch.clone(),
        tag: None,
        target_branch: None,
        sha: sha.clone(),
        changed_paths: None,
        inputs,
        actor,
        project: repo.clone(),
        repo,
        run_number: 1,
    };

    // Plan every pipeline.
    let mut plans: Vec<(String, RunPlan)> = Vec::new();
    let mut found_jobs = vec![false; args.jobs.len()];
    for (file, stem, p) in &pipelines {
        let planned = match plan::plan(stem, p, &trigger) {
            Ok(pl) => pl,
            Err(PlanError::NotTriggered(why)) => {
                eprintln!("note: {file}: not run for this {}: {why}", event.as_str());
                continue;
            }
            Err(e) => {
                eprintln!("error: {file}: {e}");
                return 1;
            }
        };
        let planned = if args.jobs.is_empty() {
            planned
        } else {
            let wanted: Vec<String> = args
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, id)| planned.only(std::slice::from_ref(id)).is_ok())
                .map(|(n, id)| {
                    found_jobs[n] = true;
                    id.clone()
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            match planned.only(&wanted) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {file}: {e}");
                    return 2;
                }
            }
        };
        plans.push((file.clone(), planned));
    }
    if let Some(n) = found_jobs.iter().position(|f| !f) {
        eprintln!(
            "error: no job `{}` in the pipelines that run for this {}",
            args.jobs[n],
            event.as_str()
        );
        return 2;
    }
    if plans.is_empty() {
        eprintln!(
            "nothing to run: no pipeline runs for this {} ({})",
            event.as_str(),
            branch.as_deref().unwrap_or("detached HEAD")
        );
        return 0;
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let work_root = std::env::temp_dir().join(format!(
        "ouro-run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let tty = stdout.is_terminal();
    let code = rt.block_on(async {
        // Jobs with `executor: sandbox` run in bubblewrap (refused with the reason when it
        // cannot run here); the others as plain processes.
        let executor: Arc<dyn Executor> = Arc::new(ShellExecutor::shell_and_sandbox(
            &work_root,
            SandboxConfig::default(),
        ));
        let (opts, cancel) = LocalOptions::new(args.slots.unwrap_or(0));
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ncancelling: stopping every job (Ctrl-C again to quit at once)...");
                let _ = cancel.send(true);
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
        let mut all_ok = true;
        let mut summary: Vec<(String, RunPlan, local::RunReport)> = Vec::new();
        for (file, planned) in plans {
            println!(
                "== {} ({file}): {} {} at {}, {} job{}, {} slot{}",
                planned.name,
                event.as_str(),
                branch.as_deref().unwrap_or("detached HEAD"),
                &sha[..sha.len().min(12)],
                planned.jobs.len(),
                if planned.jobs.len() == 1 { "" } else { "s" },
                opts.slots,
                if opts.slots == 1 { "" } else { "s" },
            );
            let mut view = View::new(&planned, tty, args.quiet);
            let o = LocalOptions {
                slots: opts.slots,
                checkout: Some(Checkout {
                    repo: root.clone(),
                    sha: sha.clone(),
                }),
                cancel: opts.cancel.clone(),
                tick: tty.then_some(Duration::from_millis(250)),
            };
            let report = local::run(&planned, executor.clone(), o, |p| view.on(p)).await;
            view.finish();
            all_ok &= report.status == RunStatus::Success;
            let cancelled = report.status == RunStatus::Cancelled;
            summary.push((file, planned, report));
            if cancelled {
                break;
            }
        }
        print_summary(&summary);
        if all_ok { 0 } else { 1 }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&work_root);
    code
}

/// The live progress view: job lines, log lines prefixed with the job id.
struct View<'a> {
    plan: &'a RunPlan,
    tty: bool,
    quiet: bool,
    states: Vec<JobState>,
    started: Vec<Option<Instant>>,
    elapsed: Vec<Option<Duration>>,
    /// Lines of the job block currently on screen (TTY mode).
    drawn: usize,
    width: usize,
}

impl<'a> View<'a> {
    fn new(plan: &'a RunPlan, tty: bool, quiet: bool) -> Self {
        let n = plan.jobs.len();
        View {
            plan,
            tty,
            quiet,
            states: vec![JobState::Queued; n],
            started: vec![None; n],
            elapsed: vec![None; n],
            drawn: 0,
            width: plan.jobs.iter().map(|j| j.id.len()).max().unwrap_or(0),
        }
    }

    fn job_line(&self, i: usize) -> String {
        let t = self.elapsed[i]
            .or_else(|| self.started[i].map(|s| s.elapsed()))
            .map(fmt_elapsed)
            .unwrap_or_default();
        format!(
            "{} {:<w$}  {:<9}  {t}",
            symbol(self.states[i]),
            self.plan.jobs[i].id,
            self.states[i].as_str(),
            w = self.width
        )
    }

    fn clear(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, out: &mut impl Write) {
        for i in 0..self.plan.jobs.len() {
            let _ = writeln!(out, "{}", self.job_line(i));
        }
        self.drawn = self.plan.jobs.len();
    }

    /// Prints `lines` (log or state lines) above the job block.
    fn print(&mut self, lines: &[String]) {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if self.tty {
            self.clear(&mut out);
        }
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        if self.tty {
            self.draw(&mut out);
        }
        let _ = out.flush();
    }

    fn on(&mut self, p: &Progress) {
        let id = |j: usize| self.plan.jobs[j].id.clone();
        match p {
            Progress::JobQueued { .. } if self.tty && self.drawn == 0 => self.print(&[]),
            Progress::JobStarted { job, attempt } => {
                self.states[*job] = JobState::Running;
                if *attempt == 1 {
                    self.started[*job] = Some(Instant::now());
                }
                let line = if self.tty {
                    Vec::new()
                } else if *attempt > 1 {
                    vec![format!("{}  running  (attempt {attempt})", id(*job))]
                } else {
                    vec![format!("{}  running", id(*job))]
                };
                self.print(&line);
            }
            Progress::StepStarted { job, name, .. } if !self.quiet => {
                self.print(&[format!("[{}] ▶ {name}", id(*job))]);
            }
            Progress::StepFinished {
                job,
                status,
                duration,
                index,
            } if !self.quiet && *status != StepStatus::Success => {
                let name = self.plan.jobs[*job]
                    .spec
                    .steps
                    .get(*index)
                    .and_then(|s| s.name.clone())
                    .unwrap_or_else(|| format!("step {}", index + 1));
                let st = serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.print(&[format!(
                    "[{}] {name}: {st} ({})",
                    id(*job),
                    fmt_elapsed(*duration)
                )]);
            }
            Progress::Log { job, line } if !self.quiet => {
                self.print(&[format!("[{}] {line}", id(*job))]);
            }
            Progress::JobFinished {
                job,
                state,
                elapsed,
                reason,
            } => {
                self.states[*job] = *state;
                self.elapsed[*job] = Some(*elapsed);
                let why = reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                let line = format!(
                    "{}  {}  {}{why}",
                    id(*job),
                    state.as_str(),
                    fmt_elapsed(*elapsed)
                );
                self.print(&[line]);
            }
            Progress::Tick => self.print(&[]),
            _ => {}
        }
    }

    fn finish(&mut self) {
        if self.tty {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            self.clear(&mut out);
            let _ = out.flush();
        }
    }
}

fn print_summary(runs: &[(String, RunPlan, local::RunReport)]) {
    let width = runs
        .iter()
        .flat_map(|(_, p, _)| p.jobs.iter().map(|j| j.id.len()))
        .max()
        .unwrap_or(3)
        .max(3);
    println!();
    println!("{:<width$}  {:<9}  {:>8}  NOTE", "JOB", "STATUS", "TIME");
    for (file, plan, report) in runs {
        if runs.len() > 1 {
            println!("# {} ({file})", plan.name);
        }
        for (j, r) in plan.jobs.iter().zip(&report.jobs) {
            let mut note = r.reason.clone().unwrap_or_default();
            if r.attempts > 1 {
                note = format!("{} attempts {note}", r.attempts).trim().to_string();
            }
            if j.spec.continue_on_error && r.state.is_failure() {
                note = format!("continue-on-error {note}").trim().to_string();
            }
            let line = format!(
                "{:<width$}  {:<9}  {:>8}  {note}",
                j.id,
                r.state.as_str(),
                fmt_elapsed(r.elapsed)
            );
            println!("{}", line.trim_end());
        }
        println!("run {}: {}", plan.name, report.status.as_str());
    }
}
