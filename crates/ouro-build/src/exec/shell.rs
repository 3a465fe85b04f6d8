//! The `shell` executor (and, with a [`SandboxConfig`], the `sandbox` executor): steps run as
//! processes on this machine.
//!
//! Per job: a fresh directory `WORK_ROOT/JOBID-NONCE/` with `ws/` (the checkout: a repository
//! borrowing the source's objects, as `git clone --shared` makes it, written directly, then one
//! `git read-tree -u --reset SHA`: HEAD detached at SHA, index and files of its tree; see
//! [`shared_checkout`]), `home/`, `tmp/` and `scripts/`; it is
//! removed when the job ends. Per step: the script is written to `scripts/step-N` and run as
//! `bash --noprofile --norc -e -o pipefail FILE` (or `sh -e FILE`, or the step's `shell`) in a
//! new process group, stdout and stderr on one pipe (so their order is kept), the environment
//! cleared to an allow-list, rlimits set before `exec`. When the step's main process exits, what is
//! left of its process group (a daemon it started) is killed; on cancel and timeouts the whole
//! group is killed (SIGTERM, a grace period, SIGKILL). Processes that left the group (`setsid`)
//! are found by the `OURO_WORKSPACE=...` entry of their environment and killed as well.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::limits::{self, Limits};
use super::sandbox::SandboxConfig;
use super::trees;
use super::{
    BoxFuture, ExecError, ExecEvent, Executor, JobContext, JobOutcome, JobSpec, JobStatus,
    StepResult, StepState, StepStatus, validate,
};

/// The `PATH` given to steps unless configured otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still read after a step's processes were killed (a process that left the
/// process group may keep the pipe open).
const DRAIN: Duration = Duration::from_secs(2);

/// Runs jobs as local processes, optionally inside bubblewrap.
#[derive(Debug, Clone)]
pub struct ShellExecutor {
    /// Jobs get directories under it.
    pub work_root: PathBuf,
    /// `PATH` for steps.
    pub path: String,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Keep the job directory after the job (debugging).
    pub keep_workspace: bool,
    /// `Some`: the `sandbox` executor.
    pub sandbox: Option<SandboxConfig>,
    /// With `sandbox`: only the jobs that require it run in the sandbox, the others as the
    /// `shell` executor would run them; the runner offers both executors.
    pub sandbox_on_demand: bool,
    /// The exec wrapper that starts step processes without forking the runner (see
    /// [`super::spawn`]); by default the one set with [`super::spawn::set_wrapper`].
    pub exec_wrapper: Option<PathBuf>,
    /// A directory of the runner's own, outside `work_root` (none: no cache): commit trees
    /// checked out once and copied into each job's workspace, and job directories removed in
    /// the background (see [`super::trees`]).
    pub cache_dir: Option<PathBuf>,
    /// With an exec wrapper: start steps with one `exec` where the kernel allows it (see
    /// [`super::vspawn`]; the default), else through the wrapper.
    pub one_exec: bool,
    /// Whether the sandbox works here, checked once.
    sandbox_ok: std::sync::Arc<std::sync::OnceLock<Result<(), String>>>,
}

impl ShellExecutor {
    /// The `shell` executor.
    pub fn new(work_root: impl Into<PathBuf>) -> Self {
        ShellExecutor {
            work_root: work_root.into(),
            path: DEFAULT_PATH.to_string(),
            grace: Duration::from_secs(5),
            keep_workspace: false,
            sandbox: None,
            sandbox_on_demand: false,
            exec_wrapper: super::spawn::wrapper().map(Path::to_path_buf),
            cache_dir: None,
            one_exec: true,
            sandbox_ok: Default::default(),
        }
    }

    /// The `sandbox` executor.
    pub fn sandboxed(work_root: impl Into<PathBuf>, cfg: SandboxConfig) -> Self {
        ShellExecutor {
            sandbox: Some(cfg),
            ..Self::new(work_root)
        }
    }

    /// Both executors: `shell` for ordinary jobs, `sandbox` for the jobs that require it
    /// (`executor: sandbox`). Check [`SandboxConfig::available`] first: this offers `sandbox`.
    pub fn shell_and_sandbox(work_root: impl Into<PathBuf>, cfg: SandboxConfig) -> Self {
        ShellExecutor {
            sandbox_on_demand: true,
            ..Self::sandboxed(work_root, cfg)
        }
    }

    /// The sandbox `job` runs in (`None`: it runs unsandboxed).
    fn sandbox_for(&self, job: &JobSpec) -> Option<&SandboxConfig> {
        self.sandbox
            .as_ref()
            .filter(|_| job.require_sandbox || !self.sandbox_on_demand)
    }
}

impl Executor for ShellExecutor {
    fn name(&self) -> &'static str {
        if self.sandbox.is_some() && !self.sandbox_on_demand {
            "sandbox"
        } else {
            "shell"
        }
    }

    fn offers(&self) -> Vec<&'static str> {
        if self.sandbox.is_some() && self.sandbox_on_demand {
            vec!["shell", "sandbox"]
        } else {
            vec![self.name()]
        }
    }

    fn available(&self) -> Result<(), String> {
        match &self.sandbox {
            Some(s) => self.sandbox_ok.get_or_init(|| s.available()).clone(),
            None => Ok(()),
        }
    }

    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        ctx: JobContext,
    ) -> BoxFuture<'a, Result<JobOutcome, ExecError>> {
        Box::pin(self.run_job(job, ctx))
    }
}

/// Why a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exited,
    StepTimeout,
    JobTimeout,
    Cancelled,
}

struct ProcEnd {
    code: Option<i32>,
    end: End,
}

/// Kills the process group if the run is dropped half-way (the runner's task was aborted).
struct GroupGuard(i32, bool);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.1 {
            limits::kill_group_now(self.0);
        }
    }
}

/// Removes the job directory at the end (in the background with a cache directory).
struct DirGuard(PathBuf, bool, Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        match &self.2 {
            Some(cache) => super::trees::remove_later(cache, &self.0),
            None => {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds from pipe2.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child's end must block (programs expect blocking stdout).
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok((r, w))
}

fn now_plus(d: Option<Duration>) -> Option<tokio::time::Instant> {
    d.map(|d| tokio::time::Instant::now() + d)
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What one process run needs besides the command.
struct RunCtx<'a> {
    events: &'a mpsc::Sender<ExecEvent>,
    cancel: &'a mut watch::Receiver<bool>,
    limits: Limits,
    grace: Duration,
    /// The environment entry every step process of this job carries (`OURO_WORKSPACE=...`).
    tag: Vec<u8>,
    /// Whether the process may carry `tag` (not the checkout's git, run with a cleared
    /// environment): only then is `/proc` searched for tagged leftovers.
    tagged: bool,
    /// Taken shortly before the job started: only processes started since are searched for the
    /// tag.
    since: limits::Since,
    /// [`ShellExecutor::one_exec`].
    one_exec: bool,
}

/// Kills the step's process group, then any process of the job that left the group.
async fn kill_all(pgid: i32, rc: &RunCtx<'_>) {
    limits::kill_group(pgid, rc.grace).await;
    if rc.tagged {
        limits::kill_tagged_since(&rc.tag, rc.since, rc.grace).await;
    }
}

/// Where the objects of the repository `repo` are (bare: `objects`, non-bare: `.git/objects`).
fn objects_dir(repo: &Path) -> Option<PathBuf> {
    [repo.join(".git").join("objects"), repo.join("objects")]
        .into_iter()
        .find(|d| d.is_dir())
        .and_then(|d| d.canonicalize().ok())
}

/// Makes `ws` the repository `git clone --shared --no-checkout REPO ws` would make, without
/// running git: `.git` with HEAD detached at `sha`, the `origin` remote, the source's objects
/// borrowed through `objects/info/alternates`. `Ok(false)`: not possible here (a SHA-256
/// repository, an unusual layout or path): the caller clones with git instead.
fn shared_checkout(repo: &Path, sha: &str, ws: &Path) -> std::io::Result<bool> {
    let hex = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    let (Some(objects), Ok(repo)) = (objects_dir(repo), repo.canonicalize()) else {
        return Ok(false);
    };
    let (Some(url), Some(objects_text)) = (repo.to_str(), objects.to_str()) else {
        return Ok(false);
    };
    if !hex || url.contains(['\n', '\r', '"', '\\']) || objects_text.contains(['\n', '\r']) {
        return Ok(false);
    }
    // A shallow or partial source, or one with another object format, needs git's own clone.
    if let Some(gitdir) = objects.parent() {
        let config = std::fs::read_to_string(gitdir.join("config"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        if gitdir.join("shallow").exists()
            || config.contains("partialclone")
            || config.contains("objectformat")
        {
            return Ok(false);
        }
    }
    let git = ws.join(".git");
    // What git needs to see a repository (it makes `objects/pack`, `refs/heads` ... on first
    // use): every directory made here is an inode each job pays for.
    for d in ["objects/info", "refs"] {
        std::fs::create_dir_all(git.join(d))?;
    }
    std::fs::write(git.join("HEAD"), format!("{sha}\n"))?;
    std::fs::write(
        git.join("config"),
        format!(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\t\
             logallrefupdates = true\n[remote \"origin\"]\n\turl = \"{url}\"\n\t\
             fetch = +refs/heads/*:refs/remotes/origin/*\n"
        ),
    )?;
    std::fs::write(
        git.join("objects/info/alternates"),
        format!("{objects_text}\n"),
    )?;
    Ok(true)
}

/// A step's main process: started by tokio (the exec wrapper or `pre_exec`), or with one `exec`
/// ([`super::vspawn`]).
enum StepChild {
    Tokio(tokio::process::Child),
    OneExec(super::vspawn::CloneChild),
}

impl StepChild {
    fn id(&self) -> Option<u32> {
        match self {
            StepChild::Tokio(c) => c.id(),
            StepChild::OneExec(c) => Some(c.id() as u32),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            StepChild::Tokio(c) => c.wait().await,
            StepChild::OneExec(c) => c.wait().await,
        }
    }
}

/// `cmd` run through the exec wrapper `wrapper` (see [`super::spawn`]): the same program,
/// arguments, working directory and environment (every command here starts from a cleared
/// environment), the wrapper's own settings (stdio, process group) copied too.
fn wrapped(cmd: &Command, wrapper: &Path, runner: libc::pid_t, limits: &Limits) -> Command {
    let inner = cmd.as_std();
    let mut w = Command::new(wrapper);
    w.args(super::spawn::wrapper_args(
        runner,
        limits,
        inner.get_program(),
        inner.get_args().map(|a| a.to_owned()),
    ));
    w.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            w.env(k, v);
        }
    }
    if let Some(d) = inner.get_current_dir() {
        w.current_dir(d);
    }
    w
}

/// Spawns `cmd` (its environment cleared: see [`wrapped`]) in a new process group with output on
/// one pipe, forwards the output as log events and waits for the end (exit, timeout or cancel),
/// killing the group's leftovers. With an exec `wrapper` the process is started through it
/// (`posix_spawn`, see [`super::spawn`]), else the limits are set in a `pre_exec` (a fork).
async fn run_process(
    mut cmd: Command,
    wrapper: Option<&Path>,
    step: Option<usize>,
    step_deadline: Option<tokio::time::Instant>,
    job_deadline: Option<tokio::time::Instant>,
    rc: &mut RunCtx<'_>,
) -> Result<ProcEnd, ExecError> {
    let runner = std::process::id() as libc::pid_t;
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    // With the `ouro` binary at hand (it runs the watchdog), one `exec` per step (see `vspawn`).
    let one_exec = wrapper.filter(|_| rc.one_exec && super::vspawn::available());
    match wrapper {
        _ if one_exec.is_some() => {}
        Some(w) => cmd = wrapped(&cmd, w, runner, &rc.limits),
        None => {
            let pairs = rc.limits.pairs();
            let stat = limits::stat_path(runner);
            // SAFETY: the closure only makes async-signal-safe calls (prctl, fork, setrlimit,
            // ...; see `limits::tie_to_runner`) on data it owns.
            unsafe {
                cmd.pre_exec(move || {
                    limits::tie_to_runner(runner, &stat)?;
                    limits::apply(&pairs)
                });
            }
        }
    }
    let (rd, wr) = pipe()?;
    let wr_raw = wr.as_raw_fd();
    let wr2 = wr.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2))
        .process_group(0)
        .kill_on_drop(true);
    let cwd = cmd
        .as_std()
        .get_current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let spawned = match one_exec {
        Some(binary) => {
            let std_cmd = cmd.as_std();
            let args: Vec<&std::ffi::OsStr> = std_cmd.get_args().collect();
            let envs: Vec<(&std::ffi::OsStr, &std::ffi::OsStr)> = std_cmd
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            super::vspawn::spawn(
                binary,
                std_cmd.get_program(),
                &args,
                &envs,
                std_cmd.get_current_dir(),
                wr_raw,
                rc.limits.pairs(),
            )
            .map(StepChild::OneExec)
        }
        None => cmd.spawn().map(StepChild::Tokio),
    };
    drop(cmd); // closes our copies of the pipe's write end
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            // A missing shell or working directory fails the step (exit code 127), it does not
            // break the runner.
            let line = format!("ouro: cannot start {program} in {cwd}: {e}\n");
            let _ = rc
                .events
                .send(ExecEvent::Log {
                    step,
                    data: line.into_bytes(),
                })
                .await;
            return Ok(ProcEnd {
                code: Some(127),
                end: End::Exited,
            });
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut guard = GroupGuard(pgid, false);
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(rd)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut eof = false;
    let mut end = End::Exited;
    let mut killed = false;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut cancel_open = true;
    if *rc.cancel.borrow() {
        end = End::Cancelled;
        killed = true;
        kill_all(pgid, rc).await;
    }
    loop {
        if exit.is_some() && eof {
            break;
        }
        tokio::select! {
            r = pipe.read(&mut buf), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    let ev = ExecEvent::Log { step, data: buf[..n].to_vec() };
                    if rc.events.send(ev).await.is_err() && !killed {
                        // Nobody listens any more: the job is abandoned.
                        end = End::Cancelled;
                        killed = true;
                        kill_all(pgid, rc).await;
                    }
                }
            },
            st = child.wait(), if exit.is_none() => {
                exit = Some(st?);
                // The main process is gone: what is left of its group goes too.
                kill_all(pgid, rc).await;
                drain_until = Some(tokio::time::Instant::now() + DRAIN);
            },
            _ = sleep_opt(step_deadline), if !killed && exit.is_none() && step_deadline.is_some() => {
                end = End::StepTimeout;
                killed = true;
                kill_all(pgid, rc).await;
            },
            _ = sleep_opt(job_deadline), if !killed && exit.is_none() && job_deadline.is_some() => {
                end = End::JobTimeout;
                killed = true;
                kill_all(pgid, rc).await;
            },
            c = rc.cancel.changed(), if !killed && exit.is_none() && cancel_open => {
                if c.is_err() {
                    cancel_open = false;
                } else if *rc.cancel.borrow() {
                    end = End::Cancelled;
                    killed = true;
                    kill_all(pgid, rc).await;
                }
            },
            _ = sleep_opt(drain_until), if drain_until.is_some() => {
                // Something outside the group still holds the pipe: stop reading.
                break;
            },
        }
    }
    guard.1 = true;
    if matches!(child, StepChild::OneExec(_)) {
        super::vspawn::forget_group(pgid);
    }
    let code = exit.map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    Ok(ProcEnd { code, end })
}

fn shell_argv(shell: Option<&str>, file: &str) -> Result<Vec<String>, ExecError> {
    Ok(match shell.map(str::trim) {
        None | Some("") | Some("bash") => [
            "bash",
            "--noprofile",
            "--norc",
            "-e",
            "-o",
            "pipefail",
            file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Some("sh") => vec!["sh".into(), "-e".into(), file.into()],
        Some(other) => {
            let mut v: Vec<String> = other.split_whitespace().map(str::to_string).collect();
            if v.iter().any(|a| a.contains("{0}")) {
                for a in &mut v {
                    *a = a.replace("{0}", file);
                }
            } else {
                v.push(file.to_string());
            }
            v
        }
    })
}

impl ShellExecutor {
    async fn run_job(&self, job: &JobSpec, ctx: JobContext) -> Result<JobOutcome, ExecError> {
        validate(job)?;
        let sandbox = self.sandbox_for(job);
        if job.require_sandbox && sandbox.is_none() {
            return Err(ExecError::Refused(
                "the job requires the sandbox executor; this is the shell executor".into(),
            ));
        }
        if sandbox.is_some() {
            self.available().map_err(|why| {
                ExecError::Refused(format!("the sandbox is not available: {why}"))
            })?;
        }
        let JobContext {
            events,
            mut cancel,
            should_run,
            hooks,
        } = ctx;
        let started = Instant::now();
        let job_deadline = now_plus(job.timeout);

        std::fs::create_dir_all(&self.work_root)?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let job_dir = self
            .work_root
            .join(format!("{}-{nonce:x}", job.id))
            .canonicalize_parent()?;
        std::fs::create_dir(&job_dir)?;
        let _dir_guard = DirGuard(job_dir.clone(), self.keep_workspace, self.cache_dir.clone());
        let ws = job_dir.join("ws");
        let home = job_dir.join("home");
        let tmp = job_dir.join("tmp");
        let scripts = job_dir.join("scripts");
        for d in [&home, &tmp, &scripts] {
            std::fs::create_dir(d)?;
        }

        let mut rc = RunCtx {
            events: &events,
            cancel: &mut cancel,
            limits: job.limits,
            grace: self.grace,
            tag: format!("OURO_WORKSPACE={}", ws.display()).into_bytes(),
            tagged: false,
            since: limits::Since::now(),
            one_exec: self.one_exec,
        };
        let mut outcome = JobOutcome {
            status: JobStatus::Success,
            exit_code: None,
            reason: None,
            duration: Duration::ZERO,
            checkout_duration: Duration::ZERO,
            steps: Vec::new(),
        };

        // Checkout (on the host: git needs the repository, which the sandbox hides).
        match &job.checkout {
            Some(c) => {
                let git_env = |cmd: &mut Command| {
                    cmd.env_clear()
                        .env("PATH", &self.path)
                        .env("HOME", &home)
                        .env("GIT_TERMINAL_PROMPT", "0")
                        .env("LANG", "C.UTF-8");
                };
                // With a cache: the commit's tree is checked out once and copied (see `trees`).
                let cache = self.cache_dir.as_ref().map(|d| {
                    let key = trees::key(&c.repo, &c.sha);
                    let tree = d.join("trees").join(&key);
                    let building = d.join("trees").join(format!(".tmp-{key}-{nonce:x}"));
                    (trees::TreeUse::acquire(d, &key), tree, building)
                });
                let cached = cache.as_ref().is_some_and(|(_, tree, _)| tree.is_dir());
                let mut building = cache
                    .as_ref()
                    .filter(|_| !cached)
                    .map(|(_, _, b)| b.clone());
                // Removes a half-built tree when the checkout fails (a no-op once renamed).
                let _building_guard = building.clone().map(|b| DirGuard(b, false, None));
                let mut cmds = Vec::new();
                let target = building.clone().unwrap_or_else(|| ws.clone());
                if cached {
                    // Nothing to run: the tree is there.
                } else if shared_checkout(&c.repo, &c.sha, &target)? {
                    // One process: the index and the files of the commit's tree.
                    let mut read = Command::new("git");
                    git_env(&mut read);
                    read.arg("read-tree")
                        .arg("-u")
                        .arg("--reset")
                        .arg(&c.sha)
                        .current_dir(&target);
                    cmds.push(("checkout", read));
                } else {
                    // git's own clone, straight into the workspace (not cached).
                    if let Some(b) = building.take() {
                        let _ = std::fs::remove_dir_all(b);
                    }
                    let _ = std::fs::remove_dir_all(&ws);
                    let mut clone = Command::new("git");
                    git_env(&mut clone);
                    clone
                        .arg("clone")
                        .arg("--quiet")
                        .arg("--shared")
                        .arg("--no-checkout")
                        .arg("--")
                        .arg(&c.repo)
                        .arg(&ws)
                        .current_dir(&job_dir);
                    let mut checkout = Command::new("git");
                    git_env(&mut checkout);
                    checkout
                        .arg("-c")
                        .arg("advice.detachedHead=false")
                        .arg("checkout")
                        .arg("--quiet")
                        .arg("--detach")
                        .arg(&c.sha)
                        .arg("--")
                        .current_dir(&ws);
                    cmds.push(("clone", clone));
                    cmds.push(("checkout", checkout));
                }
                for (what, cmd) in cmds {
                    let r = run_process(
                        cmd,
                        self.exec_wrapper.as_deref(),
                        None,
                        None,
                        job_deadline,
                        &mut rc,
                    )
                    .await?;
                    let failed = match r.end {
                        End::Cancelled => Some(JobStatus::Cancelled),
                        End::JobTimeout => Some(JobStatus::TimedOut),
                        _ if r.code != Some(0) => Some(JobStatus::Failure),
                        _ => None,
                    };
                    if let Some(status) = failed {
                        let reason = format!(
                            "checkout of {} failed: git {what} {}",
                            c.sha,
                            match r.end {
                                End::Cancelled => "was cancelled".to_string(),
                                End::JobTimeout => "hit the job timeout".to_string(),
                                _ => format!("exited with {}", r.code.unwrap_or(-1)),
                            }
                        );
                        let line = format!("ouro: {reason}\n").into_bytes();
                        let _ = events
                            .send(ExecEvent::Log {
                                step: None,
                                data: line,
                            })
                            .await;
                        outcome.status = status;
                        outcome.reason = Some(reason);
                        outcome.duration = started.elapsed();
                        outcome.checkout_duration = outcome.duration;
                        return Ok(outcome);
                    }
                }
                if let Some((_use, tree, _)) = &cache {
                    if let Some(b) = &building
                        && std::fs::rename(b, tree).is_err()
                        && !tree.is_dir()
                    {
                        return Err(ExecError::Io(std::io::Error::other(format!(
                            "cannot keep the checkout of {} in the cache",
                            c.sha
                        ))));
                    }
                    // (A tree another job built meanwhile is used; ours is removed by its guard.)
                    if cached || building.is_some() {
                        let (tree, ws) = (tree.clone(), ws.clone());
                        tokio::task::spawn_blocking(move || trees::copy_tree(&tree, &ws))
                            .await
                            .map_err(std::io::Error::other)??;
                    }
                }
            }
            None => std::fs::create_dir(&ws)?,
        }
        outcome.checkout_duration = started.elapsed();
        rc.tagged = true; // steps carry the tag from here on
        // The object directories a `--shared` clone borrows (shown read-only in the sandbox).
        let alternates: Vec<PathBuf> =
            std::fs::read_to_string(ws.join(".git/objects/info/alternates"))
                .map(|t| {
                    t.lines()
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| ws.join(".git/objects").join(l))
                        .filter_map(|p| p.canonicalize().ok())
                        .collect()
                })
                .unwrap_or_default();

        if let Some(h) = &hooks
            && let Err(reason) = h.after_checkout(&ws, &events).await
        {
            let _ = events
                .send(ExecEvent::Log {
                    step: None,
                    data: format!("ouro: {reason}\n").into_bytes(),
                })
                .await;
            outcome.status = JobStatus::Failure;
            outcome.reason = Some(reason);
            outcome.duration = started.elapsed();
            return Ok(outcome);
        }

        let mut job_failed = false;
        let mut stopped: Option<JobStatus> = None;
        for (index, step) in job.steps.iter().enumerate() {
            let run = stopped.is_none()
                && match &should_run {
                    Some(hook) => hook(step, StepState { index, job_failed }),
                    None => !job_failed,
                };
            if !run {
                let _ = events.send(ExecEvent::StepSkipped { index }).await;
                outcome.steps.push(StepResult {
                    name: step.name.clone(),
                    status: StepStatus::Skipped,
                    exit_code: None,
                    duration: Duration::ZERO,
                });
                continue;
            }
            let _ = events
                .send(ExecEvent::StepStarted {
                    index,
                    name: step.name.clone(),
                })
                .await;
            let step_started = Instant::now();
            let script = scripts.join(format!("step-{index}"));
            std::fs::write(&script, &step.run)?;
            let cwd = match &step.working_directory {
                Some(wd) => ws.join(wd),
                None => ws.clone(),
            };
            let argv = shell_argv(step.shell.as_deref(), &script.display().to_string())?;
            let mut cmd = match sandbox {
                None => {
                    let mut c = Command::new(&argv[0]);
                    c.args(&argv[1..]).current_dir(&cwd);
                    c
                }
                Some(sb) => {
                    let mut c = Command::new(&sb.bwrap);
                    c.args(sb.args(
                        &job_dir,
                        &cwd,
                        &[self.work_root.canonicalize()?],
                        &alternates,
                        job.network,
                    ))
                    .arg("--")
                    .args(&argv)
                    .current_dir(&job_dir);
                    c
                }
            };
            cmd.env_clear();
            let tmpdir = if sandbox.is_some() {
                PathBuf::from("/tmp")
            } else {
                tmp.clone()
            };
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            env.insert("PATH".into(), self.path.clone());
            env.insert("HOME".into(), home.display().to_string());
            env.insert(
                "LANG".into(),
                std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            );
            env.insert("TERM".into(), "dumb".into());
            env.insert("TMPDIR".into(), tmpdir.display().to_string());
            env.insert("CI".into(), "true".into());
            env.insert("OURO".into(), "true".into());
            env.insert("OURO_JOB_ID".into(), job.id.clone());
            env.insert("OURO_WORKSPACE".into(), ws.display().to_string());
            for (k, v) in job.env.iter().chain(step.env.iter()) {
                env.insert(k.clone(), v.clone());
            }
            cmd.envs(&env);
            let step_deadline = now_plus(step.timeout);
            let r = run_process(
                cmd,
                self.exec_wrapper.as_deref(),
                Some(index),
                step_deadline,
                job_deadline,
                &mut rc,
            )
            .await?;
            let duration = step_started.elapsed();
            let status = match r.end {
                End::Exited if r.code == Some(0) => StepStatus::Success,
                End::Exited => StepStatus::Failure,
                End::StepTimeout | End::JobTimeout => StepStatus::TimedOut,
                End::Cancelled => StepStatus::Cancelled,
            };
            let note = match r.end {
                End::StepTimeout => Some(format!(
                    "\nouro: step {:?} timed out after {}s and was killed\n",
                    step.name,
                    step.timeout.unwrap_or_default().as_secs_f64()
                )),
                End::JobTimeout => Some(format!(
                    "\nouro: the job timed out after {}s; step {:?} was killed\n",
                    job.timeout.unwrap_or_default().as_secs_f64(),
                    step.name
                )),
                End::Cancelled => Some(format!(
                    "\nouro: the job was cancelled; step {:?} was killed\n",
                    step.name
                )),
                End::Exited => None,
            };
            if let Some(note) = note {
                let _ = events
                    .send(ExecEvent::Log {
                        step: Some(index),
                        data: note.into_bytes(),
                    })
                    .await;
            }
            let _ = events
                .send(ExecEvent::StepFinished {
                    index,
                    status,
                    exit_code: r.code,
                    duration,
                })
                .await;
            outcome.steps.push(StepResult {
                name: step.name.clone(),
                status,
                exit_code: r.code,
                duration,
            });
            match r.end {
                End::Cancelled => stopped = Some(JobStatus::Cancelled),
                End::JobTimeout => stopped = Some(JobStatus::TimedOut),
                _ => {}
            }
            if status != StepStatus::Success && !step.continue_on_error && !job_failed {
                job_failed = true;
                outcome.exit_code = r.code;
            }
        }
        outcome.status = match stopped {
            Some(s) => s,
            None if job_failed => JobStatus::Failure,
            None => {
                outcome.exit_code = Some(0);
                JobStatus::Success
            }
        };
        if let Some(h) = &hooks
            && stopped.is_none()
            && let Err(reason) = h.after_steps(&ws, !job_failed, &events).await
        {
            let _ = events
                .send(ExecEvent::Log {
                    step: None,
                    data: format!("ouro: {reason}\n").into_bytes(),
                })
                .await;
            if outcome.status == JobStatus::Success {
                outcome.status = JobStatus::Failure;
                outcome.exit_code = None;
            }
            outcome.reason.get_or_insert(reason);
        }
        outcome.duration = started.elapsed();
        Ok(outcome)
    }
}

trait CanonicalizeParent {
    fn canonicalize_parent(self) -> std::io::Result<PathBuf>;
}

impl CanonicalizeParent for PathBuf {
    /// The path with its parent canonicalized (bwrap binds need real paths).
    fn canonicalize_parent(self) -> std::io::Result<PathBuf> {
        let name = self
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let parent: &Path = self.parent().unwrap_or(Path::new("."));
        Ok(parent.canonicalize()?.join(name))
    }
}
