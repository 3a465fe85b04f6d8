//! `ouro runner`: a runner on another machine. It registers with a registration token on first
//! start (the runner token is kept in `WORK_DIR/runner.json`), then claims jobs over HTTP
//! (long-poll) with N slots and runs them with the shell executor (or, with `--sandbox`, inside
//! bubblewrap), exactly as the in-process runner does ([`ouro_build::runner::local::serve_slots`], [`ouro_build::runner::worker`]).
//! The commit is cloned over the server's smart HTTP with the attempt token as credential
//! (user `ouro-job`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use std::collections::HashSet;
use std::sync::Mutex;

use ouro_build::exec::{
    Checkout, ExecError, Executor, JobContext, JobOutcome, JobSpec, SandboxConfig, ShellExecutor,
};
use ouro_build::runner::{
    ApiError, BoxFuture, CheckoutSource, ClaimedJob, JobResult, RunnerApi, SectionMark,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Args)]
pub struct RunnerArgs {
    /// The server's URL (http://host:7070).
    #[arg(long, env = "OURO_SERVER")]
    pub server: String,
    /// A registration token (first start), or the runner token. Not needed once registered.
    #[arg(long, env = "OURO_RUNNER_TOKEN")]
    pub token: Option<String>,
    /// Labels (comma-separated): a job's `runs-on` must be a subset.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Jobs at the same time (default: the number of cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Where the runner keeps its token, clones and workspaces (default ./ouro-runner).
    #[arg(long, default_value = "ouro-runner")]
    pub work_dir: PathBuf,
    /// The runner's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Run every job's steps in the bubblewrap sandbox (executor `sandbox`): the host read-only,
    /// private /tmp and /home, this runner's own files (its token, the other jobs) hidden, own
    /// namespaces (docs/executors.md). The runner refuses to start when bubblewrap cannot run.
    #[arg(long, env = "OURO_RUNNER_SANDBOX")]
    pub sandbox: bool,
}

/// The protocol over HTTP.
pub struct HttpApi {
    client: reqwest::Client,
    base: String,
    token: String,
    /// The executors it offers, sent with every claim (`shell,sandbox`).
    executors: String,
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::Failed(e.to_string())
}

impl HttpApi {
    async fn send(
        &self,
        method: Method,
        path: &str,
        attempt: Option<&str>,
        body: Option<reqwest::Body>,
        json_body: Option<Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(a) = attempt {
            r = r.header("ouro-attempt-token", a);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        if let Some(j) = json_body {
            r = r.json(&j);
        }
        let res = r.send().await.map_err(failed)?;
        let st = res.status();
        let bytes = res.bytes().await.map_err(failed)?.to_vec();
        if st.is_success() {
            return Ok((st, bytes));
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if v["error"]["code"] == "build.stale_attempt" {
            return Err(ApiError::Stale);
        }
        Err(ApiError::Failed(format!(
            "{st}: {}",
            v["error"]["message"].as_str().unwrap_or("")
        )))
    }
}

const CALL: Duration = Duration::from_secs(30);

impl RunnerApi for HttpApi {
    fn server_url(&self) -> Option<String> {
        Some(self.base.clone())
    }

    fn job_hooks(
        &self,
        job: &ClaimedJob,
        spec: &ouro_build::pipeline::Job,
        ctx: ouro_build::expr::Context,
    ) -> Option<std::sync::Arc<dyn ouro_build::exec::JobHooks>> {
        ouro_build::artifacts::JobFiles::over_http(
            self.client.clone(),
            &self.base,
            job.job_id,
            &job.token,
            spec,
            !job.needs.is_empty(),
            ctx,
        )
    }

    fn claim(&self, wait: Duration) -> BoxFuture<'_, Result<Option<ClaimedJob>, ApiError>> {
        Box::pin(async move {
            let path = format!(
                "/api/v1/runner/claim?wait={}&executors={}",
                wait.as_secs(),
                self.executors
            );
            let (st, body) = self
                .send(Method::POST, &path, None, None, None, wait + CALL)
                .await?;
            if st == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            serde_json::from_slice(&body).map(Some).map_err(failed)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, ApiError>> {
        Box::pin(async move {
            let path = format!("/api/v1/runner/jobs/{job_id}/heartbeat");
            let (_, body) = self
                .send(Method::POST, &path, Some(token), None, None, CALL)
                .await?;
            let v: Value = serde_json::from_slice(&body).map_err(failed)?;
            Ok(v["cancel"].as_bool().unwrap_or(false))
        })
    }

    fn append_log<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        offset: u64,
        data: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let path = format!("/api/v1/runner/jobs/{job_id}/log?offset={offset}");
            self.send(
                Method::PUT,
                &path,
                Some(token),
                Some(data.into()),
                None,
                CALL,
            )
            .await
            .map(|_| ())
        })
    }

    fn section<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        mark: SectionMark,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let path = format!("/api/v1/runner/jobs/{job_id}/sections");
            let body = serde_json::to_value(mark).map_err(failed)?;
            self.send(Method::POST, &path, Some(token), None, Some(body), CALL)
                .await
                .map(|_| ())
        })
    }

    fn finish<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        result: JobResult,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let path = format!("/api/v1/runner/jobs/{job_id}/finish");
            let body = serde_json::to_value(result).map_err(failed)?;
            self.send(Method::POST, &path, Some(token), None, Some(body), CALL)
                .await
                .map(|_| ())
        })
    }
}

/// Registers (first start) or reads the stored runner token.
async fn runner_token(
    client: &reqwest::Client,
    base: &str,
    args: &RunnerArgs,
    executors: &[String],
    slots: usize,
) -> anyhow::Result<String> {
    let file = args.work_dir.join("runner.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let v: Value = serde_json::from_str(&text).context("runner.json is not valid")?;
        if let Some(t) = v["token"].as_str() {
            return Ok(t.to_string());
        }
    }
    let Some(token) = &args.token else {
        anyhow::bail!("not registered yet: pass --token with a registration token");
    };
    if token.starts_with("ourrun_") {
        return Ok(token.clone());
    }
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "runner".into())
    });
    let res = client
        .post(format!("{base}/api/v1/runners/register"))
        .json(&json!({"token": token, "name": name, "labels": args.labels,
                      "executors": executors, "slots": slots}))
        .send()
        .await
        .context("cannot reach the server")?;
    let st = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !st.is_success() {
        anyhow::bail!(
            "registration refused ({st}): {}",
            v["error"]["message"].as_str().unwrap_or("")
        );
    }
    std::fs::create_dir_all(&args.work_dir)?;
    std::fs::write(&file, serde_json::to_vec_pretty(&v)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
    eprintln!(
        "registered as runner {} ({name})",
        v["id"].as_str().unwrap_or("")
    );
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

/// The job clones of this runner (`WORK_DIR/clones/<job id>`): each is removed when its job
/// ends; a clone whose job never reached the executor (skipped, failed to prepare) or whose
/// runner was killed is swept before the next clone.
struct Clones {
    root: PathBuf,
    active: Mutex<HashSet<PathBuf>>,
}

impl Clones {
    /// A fresh directory for job `job_id` (clones of jobs no longer running are removed).
    fn take(&self, job_id: i64) -> PathBuf {
        let dir = self.root.join(job_id.to_string());
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if !active.contains(&e.path()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        active.insert(dir.clone());
        dir
    }

    /// Removes the clone `dir` (when it is one of ours).
    fn release(&self, dir: &Path) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.remove(dir) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The shell executor, removing the job's clone when the job ends (its workspace is removed
/// by the executor itself).
struct CleaningExecutor {
    inner: ShellExecutor,
    clones: Arc<Clones>,
}

impl Executor for CleaningExecutor {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn offers(&self) -> Vec<&'static str> {
        self.inner.offers()
    }

    fn available(&self) -> Result<(), String> {
        self.inner.available()
    }

    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        ctx: JobContext,
    ) -> ouro_build::exec::BoxFuture<'a, Result<JobOutcome, ExecError>> {
        Box::pin(async move {
            let out = self.inner.run(job, ctx).await;
            if let Some(c) = &job.checkout {
                self.clones.release(&c.repo);
            }
            out
        })
    }
}

/// Fetches the job's commit into the bare repository `dir` (ref `ouro-job`) over smart HTTP
/// with the attempt token.
async fn clone_for(base: &str, job: &ClaimedJob, dir: &Path) -> Result<Option<Checkout>, String> {
    let (path, sha) = match &job.checkout {
        CheckoutSource::Git { path, sha } => (path.clone(), sha.clone()),
        CheckoutSource::Local { repo_path, sha } => {
            return Ok(Some(Checkout {
                repo: PathBuf::from(repo_path),
                sha: sha.clone(),
            }));
        }
    };
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let d = dir.to_string_lossy().to_string();
    let url = format!("{base}{path}");
    let git = |args: Vec<String>| {
        let mut c = tokio::process::Command::new("git");
        c.args(&args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true);
        c
    };
    let out = git(vec!["init".into(), "-q".into(), "--bare".into(), d.clone()])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    // The credential goes in a header, not the URL (it would land in the repo's config).
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ouro-job:{}", job.token));
    let out = git(vec![
        "-C".into(),
        d.clone(),
        "-c".into(),
        format!("http.extraHeader=Authorization: Basic {basic}"),
        "fetch".into(),
        "-q".into(),
        "--".into(),
        url,
        format!("{sha}:refs/heads/ouro-job"),
    ])
    .output()
    .await
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "git fetch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Some(Checkout {
        repo: dir.to_path_buf(),
        sha,
    }))
}

pub async fn run(args: RunnerArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let work = args.work_dir.join("work");
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    ouro_build::runner::local::kill_leftovers(&work).await;
    // Jobs must not see the runner's token (`runner.json`) nor the clones of other jobs; the
    // executor binds the job's own directory and its clone's objects back in.
    let cfg = SandboxConfig {
        hidden: vec![args.work_dir.canonicalize()?],
        ..SandboxConfig::default()
    };
    let sandbox = cfg.available();
    let shell = match (args.sandbox, sandbox) {
        (true, Ok(())) => ShellExecutor::sandboxed(&work, cfg),
        (true, Err(why)) => anyhow::bail!(
            "--sandbox: bubblewrap cannot run jobs here: {why}. Install the `bubblewrap` \
             package (Debian) and allow unprivileged user namespaces \
             (sysctl kernel.unprivileged_userns_clone=1), or start the runner without --sandbox"
        ),
        // Jobs that ask for the sandbox (`executor: sandbox`) get it; the others run unsandboxed.
        (false, Ok(())) => ShellExecutor::shell_and_sandbox(&work, cfg),
        (false, Err(why)) => {
            eprintln!("no sandbox ({why}): jobs with `executor: sandbox` go to other runners");
            ShellExecutor::new(&work)
        }
    };
    let executors: Vec<String> = shell.offers().into_iter().map(String::from).collect();
    let client = reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client")?;
    let token = runner_token(&client, &base, &args, &executors, slots).await?;
    let api: Arc<dyn RunnerApi> = Arc::new(HttpApi {
        client,
        base: base.clone(),
        token,
        executors: executors.join(","),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: no new jobs");
        let _ = stop_tx.send(true);
    });
    let clones_dir = args.work_dir.join("clones");
    // Clones left by a previous incarnation (killed mid-job) go.
    let _ = std::fs::remove_dir_all(&clones_dir);
    std::fs::create_dir_all(&clones_dir)?;
    let clones = Arc::new(Clones {
        root: clones_dir.canonicalize()?,
        active: Mutex::new(HashSet::new()),
    });
    let ex = CleaningExecutor {
        inner: shell,
        clones: clones.clone(),
    };
    eprintln!(
        "runner: {slots} slots, labels {:?}, executors {executors:?}, server {base}",
        args.labels
    );
    ouro_build::runner::local::serve_slots(
        api,
        Arc::new(ex),
        slots,
        stop_rx,
        move |job: &ClaimedJob| {
            let (base, job, dir) = (base.clone(), job.clone(), clones.take(job.job_id));
            Box::pin(async move { clone_for(&base, &job, &dir).await })
        },
    )
    .await;
    Ok(())
}
