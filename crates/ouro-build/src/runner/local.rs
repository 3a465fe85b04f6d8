//! The in-process runner of `ouro serve`: a [`RunnerApi`] that calls [`super::server`] directly
//! (the same functions the HTTP handlers call: the same lease logic), N slots, and the reaper.
//! An idle claim waits for a wake-up ([`super::wake`]), not a poll.
//!
//! At start it kills processes a previous incarnation of the server left behind (their
//! workspaces are still in its work directory; see [`kill_leftovers`]), so a job never runs twice
//! at the same time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ouro_store::crypto::SecretBox;
use ouro_store::{Store, StoreError};
use tokio::sync::{Semaphore, watch};

use super::server::{self, CheckoutKind};
use super::{ApiError, BoxFuture, CheckoutSource, ClaimedJob, JobResult, RunnerApi, SectionMark};
use crate::artifacts::StorageSettings;
use crate::blobs::BlobStore;
use crate::exec::{Checkout, Executor, ShellExecutor};

/// The id of the in-process runner in `build_runners`.
pub const LOCAL_ID: &str = "local";
/// How often the reaper looks for expired leases.
const REAP_EVERY: Duration = Duration::from_secs(5);

fn api_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Domain(e) if e.code == ouro_core::ErrorCode::StaleAttempt => ApiError::Stale,
        other => ApiError::Failed(ouro_core::OuroError::from(other).message),
    }
}

/// The protocol, in process.
pub struct LocalApi {
    pub store: Store,
    pub data_dir: PathBuf,
    pub runner_id: String,
    pub labels: Vec<String>,
    /// The executors it offers (`shell`, `sandbox`).
    pub executors: Vec<String>,
    /// Seals and opens project secrets (the instance key).
    pub secrets: SecretBox,
    /// Where artifacts and caches go (`None`: jobs get no artifact/cache hooks).
    pub files: Option<LocalFiles>,
    /// The server's URL, given to jobs as `OURO_SERVER_URL`.
    pub server_url: Option<String>,
}

/// The blob store and its settings, for the in-process runner's artifact and cache hooks.
#[derive(Clone)]
pub struct LocalFiles {
    pub blobs: Arc<dyn BlobStore>,
    pub settings: StorageSettings,
}

impl LocalApi {
    fn offer(&self) -> crate::runs::Offer<'_> {
        crate::runs::Offer {
            labels: &self.labels,
            executors: &self.executors,
        }
    }
}

impl RunnerApi for LocalApi {
    fn server_url(&self) -> Option<String> {
        self.server_url.clone()
    }

    fn job_hooks(
        &self,
        job: &ClaimedJob,
        spec: &crate::pipeline::Job,
        ctx: crate::expr::Context,
    ) -> Option<Arc<dyn crate::exec::JobHooks>> {
        let files = self.files.as_ref()?;
        crate::artifacts::JobFiles::in_process_for(
            self.store.clone(),
            files.blobs.clone(),
            &files.settings,
            (job.job_id, &job.token),
            !job.needs.is_empty(),
            spec,
            ctx,
        )
    }

    fn claim(&self, wait: Duration) -> BoxFuture<'_, Result<Option<ClaimedJob>, ApiError>> {
        Box::pin(async move {
            super::wake::wait_for(wait, super::wake::FALLBACK_POLL, || async {
                server::claim(
                    &self.store,
                    &self.data_dir,
                    &self.secrets,
                    &self.runner_id,
                    self.offer(),
                    CheckoutKind::Local,
                )
                .await
                .map_err(api_error)
            })
            .await
        })
    }

    fn heartbeat<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, ApiError>> {
        Box::pin(async move {
            server::heartbeat(&self.store, &self.data_dir, &self.runner_id, job_id, token)
                .await
                .map_err(api_error)
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
            server::append_log(&self.store, &self.data_dir, job_id, token, offset, data)
                .await
                .map_err(api_error)
        })
    }

    fn section<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        mark: SectionMark,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            server::section(&self.store, &self.data_dir, job_id, token, mark)
                .await
                .map_err(api_error)
        })
    }

    fn finish<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        result: JobResult,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            server::finish(&self.store, &self.data_dir, job_id, token, &result)
                .await
                .map_err(api_error)
        })
    }

    fn finish_and_claim<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        result: JobResult,
    ) -> BoxFuture<'a, Result<Option<ClaimedJob>, ApiError>> {
        Box::pin(async move {
            let next = server::NextClaim {
                sbox: &self.secrets,
                runner_id: &self.runner_id,
                offer: self.offer(),
                kind: CheckoutKind::Local,
            };
            server::finish_then_claim(
                &self.store,
                &self.data_dir,
                job_id,
                token,
                &result,
                Some(next),
            )
            .await
            .map_err(api_error)
        })
    }
}

/// Where the in-process runner's workspaces live.
pub fn work_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("build").join("work")
}

/// The in-process runner's checkout cache and trash (see [`crate::exec::trees`]).
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("build").join("cache")
}

/// Kills the processes of workspaces left in `work_root` (a previous incarnation was killed
/// mid-job) and removes the workspaces.
pub async fn kill_leftovers(work_root: &Path) {
    let Ok(root) = work_root.canonicalize() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(&root) else {
        return;
    };
    for e in rd.flatten() {
        let ws = e.path().join("ws");
        let tag = format!("OURO_WORKSPACE={}", ws.display());
        crate::exec::limits::kill_tagged(tag.as_bytes(), Duration::from_secs(2)).await;
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// The checkout of a claimed job on this machine.
pub fn local_checkout(job: &ClaimedJob) -> Option<Checkout> {
    match &job.checkout {
        CheckoutSource::Local { repo_path, sha } => Some(Checkout {
            repo: PathBuf::from(repo_path),
            sha: sha.clone(),
        }),
        CheckoutSource::Git { .. } => None,
    }
}

/// Claims and runs jobs with `slots` slots until `stop` turns `true`. `checkout` turns a claimed
/// job into its workspace's commit (or a message: the job fails as an infra failure).
pub async fn serve_slots<F>(
    api: Arc<dyn RunnerApi>,
    ex: Arc<dyn Executor>,
    slots: usize,
    mut stop: watch::Receiver<bool>,
    checkout: F,
) where
    F: Fn(&ClaimedJob) -> BoxFuture<'static, Result<Option<Checkout>, String>>
        + Send
        + Sync
        + 'static,
{
    let checkout = Arc::new(checkout);
    let sem = Arc::new(Semaphore::new(slots.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("never closed"),
            _ = stop.wait_for(|s| *s) => break,
        };
        let claimed = tokio::select! {
            c = api.claim(super::CLAIM_WAIT) => c,
            _ = stop.wait_for(|s| *s) => break,
        };
        match claimed {
            Ok(Some(job)) => {
                let (api, ex, checkout) = (api.clone(), ex.clone(), checkout.clone());
                let stop = stop.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    // The slot keeps going while finishing a job hands it the next one.
                    let mut job = Some(job);
                    while let Some(this) = job.take() {
                        let claim_next = !*stop.borrow();
                        job = match checkout(&this).await {
                            Ok(co) => {
                                super::worker::run_job_then(
                                    api.as_ref(),
                                    ex.as_ref(),
                                    &this,
                                    co,
                                    claim_next,
                                )
                                .await
                                .1
                            }
                            Err(why) => {
                                let _ = api
                                    .finish(
                                        this.job_id,
                                        &this.token,
                                        JobResult {
                                            status: "failure".into(),
                                            exit_code: None,
                                            reason: Some(format!("checkout: {why}")),
                                            infra_failure: true,
                                            started_at_ms: 0,
                                            finished_at_ms: 0,
                                        },
                                    )
                                    .await;
                                None
                            }
                        };
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
}

/// Settings of the in-process runner.
#[derive(Clone)]
pub struct LocalRunner {
    pub data_dir: PathBuf,
    pub slots: usize,
    /// Labels besides `local`.
    pub labels: Vec<String>,
    pub secrets: SecretBox,
    pub files: Option<LocalFiles>,
    /// How job logs are stored (the per-job cap); for the HTTP runner protocol too.
    pub log: crate::logs::LogConfig,
    /// The server's URL, given to jobs as `OURO_SERVER_URL` (none: not set).
    pub server_url: Option<String>,
    /// Run every step in the bubblewrap sandbox with the data dir hidden (executor `sandbox`).
    /// Check [`sandbox_available`] first: a sandbox that cannot run refuses every job.
    pub sandbox: bool,
}

/// Whether the in-process runner's sandbox can run here (bubblewrap creating namespaces);
/// `Err` says why.
pub fn sandbox_available() -> Result<(), String> {
    // Checked once per process: it starts bubblewrap, and the answer does not change.
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| crate::exec::SandboxConfig::default().available())
        .clone()
}

/// Starts the in-process runner and the reaper; they stop when `stop` turns `true`.
/// `slots == 0` starts only the reaper.
pub async fn start(
    store: Store,
    cfg: LocalRunner,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    server::configure_logs(&cfg.data_dir, cfg.log.clone());
    let mut handles = Vec::new();
    let reaper_store = store.clone();
    let reaper_dir = cfg.data_dir.clone();
    let mut reaper_stop = stop.clone();
    handles.push(tokio::spawn(async move {
        loop {
            if let Err(e) = server::reap(&reaper_store, &reaper_dir).await {
                tracing::warn!(error = %e, "reaping expired job leases failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(REAP_EVERY) => {}
                _ = reaper_stop.changed() => return,
            }
        }
    }));
    if cfg.slots == 0 {
        return handles;
    }
    let work = work_dir(&cfg.data_dir);
    kill_leftovers(&work).await;
    let mut labels = vec!["local".to_string()];
    for l in &cfg.labels {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    // Jobs must not see the data dir (the database, keys, other jobs); the executor binds the
    // job's own directory and its checkout's objects back in.
    let sandbox = crate::exec::SandboxConfig {
        hidden: vec![cfg.data_dir.clone()],
        ..Default::default()
    };
    let mut ex = if cfg.sandbox {
        ShellExecutor::sandboxed(&work, sandbox)
    } else {
        let check = tokio::task::spawn_blocking(sandbox_available).await;
        match check.unwrap_or_else(|e| Err(e.to_string())) {
            // Jobs that ask for the sandbox (`executor: sandbox`) get it; the others run as shell.
            Ok(()) => ShellExecutor::shell_and_sandbox(&work, sandbox),
            Err(why) => {
                tracing::info!(
                    "the in-process runner offers no sandbox ({why}); jobs with \
                     `executor: sandbox` wait for a runner that does"
                );
                ShellExecutor::new(&work)
            }
        }
    };
    // Commit trees checked out once, and finished workspaces removed in the background; emptied
    // at start like the work directory.
    let cache = cache_dir(&cfg.data_dir);
    crate::exec::trees::clear(&cache);
    ex.cache_dir = Some(cache);
    let executors: Vec<String> = ex.offers().into_iter().map(String::from).collect();
    if let Err(e) = server::upsert_runner(
        &store,
        LOCAL_ID,
        "in-process",
        &labels,
        &executors,
        cfg.slots as i64,
    )
    .await
    {
        tracing::warn!(error = %e, "cannot record the in-process runner");
    }
    let api: Arc<dyn RunnerApi> = Arc::new(LocalApi {
        store,
        data_dir: cfg.data_dir.clone(),
        runner_id: LOCAL_ID.into(),
        labels,
        executors,
        secrets: cfg.secrets.clone(),
        files: cfg.files.clone(),
        server_url: cfg.server_url.clone(),
    });
    handles.push(tokio::spawn(serve_slots(
        api,
        Arc::new(ex),
        cfg.slots,
        stop,
        |job: &ClaimedJob| {
            let co = local_checkout(job);
            Box::pin(async move {
                co.map(Some)
                    .ok_or_else(|| "the in-process runner needs a local repository".to_string())
            })
        },
    )));
    handles
}
