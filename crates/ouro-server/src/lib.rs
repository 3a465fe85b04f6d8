//! Ouro's HTTP server: the JSON API under `/api/v1`, the web UI, health and metrics. It is thin:
//! domain rules live in the store and phase crates; this crate authenticates, routes and renders.
//!
//! Library-first: [`launch`] runs a server on a listener until a shutdown future resolves, and
//! [`start`] gives tests the bound server without blocking.

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod git_http;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod settings;
pub mod ui;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use ouro_store::crypto::SecretBox;
use ouro_store::{Migration, PLATFORM_MIGRATIONS, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use registry::{Registry, RouteSpec};
pub use settings::{Overrides, Settings};

/// Shared state of a running server.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub settings: Settings,
    pub metrics: Arc<metrics::Metrics>,
    pub secrets: SecretBox,
    pub throttle: auth::Throttle,
    /// Public feedback submissions per client address (docs/intake.md).
    pub intake_throttle: auth::Throttle,
    /// SHA-256 of the one-time setup token while no user exists.
    pub setup_token: Mutex<Option<String>>,
    pub base_url: String,
    /// Flips to true when shutdown starts; long-lived responses (event streams) end on it.
    pub shutting_down: watch::Receiver<bool>,
    pub http: reqwest::Client,
    /// The OpenAPI document, built on first request.
    pub openapi: std::sync::OnceLock<serde_json::Value>,
    /// Build artifacts and caches (`data_dir/blobs`, content-addressed).
    pub blobs: Arc<dyn ouro_build::blobs::BlobStore>,
    /// Wakes live job log streams: whoever appends to a job log calls `log_hub.notify(job_id)`.
    pub log_hub: ouro_build::logview::LogHub,
    /// Deploy: the engine (deployments, rollback, environments) over the local target, whose
    /// supervisor and proxy live as long as the server (docs/deploy.md).
    pub deploy: Arc<ouro_deploy::engine::Engine>,
    pub deploy_target: Arc<ouro_deploy::local_target::LocalTarget>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Errors that stop the server from starting, with what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] ouro_store::StoreError),
    #[error(
        "cannot use data dir {path}: {source}; check that the directory exists and is writable"
    )]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the listener address: {0}")]
    Listener(std::io::Error),
    /// The blob store (`[blobs]`) cannot be used: a wrong bucket, endpoint or key.
    #[error("{0}")]
    Blobs(String),
    #[error("{0}")]
    Deploy(String),
    /// The in-process runner cannot run as configured (`[runner] sandbox` without bubblewrap).
    #[error("{0}")]
    Runner(String),
}

/// Every component's migrations, in the order they apply. Phase crates append theirs here.
pub fn all_migrations() -> Vec<Migration> {
    [
        PLATFORM_MIGRATIONS,
        ouro_plan::MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
        ouro_test::MIGRATIONS,
        ouro_release::MIGRATIONS,
        ouro_deploy::MIGRATIONS,
    ]
    .concat()
}

/// Opens the store the settings point at (creating the data dir for SQLite).
pub async fn open_store(settings: &Settings) -> Result<Store, StartError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    Ok(Store::open(&settings.effective_database_url(), &all_migrations()).await?)
}

/// The instance secret: from settings, else a key file in the data dir (created once, mode 0600).
fn instance_secret(settings: &Settings) -> Result<Vec<u8>, StartError> {
    if let Some(k) = &settings.secret_key {
        return Ok(k.as_bytes().to_vec());
    }
    let path = settings.data_dir.join("secret.key");
    let io = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(k) => Ok(k.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ouro_store::crypto::random_token("");
            write_private(&path, &key).map_err(io)?;
            Ok(key.into_bytes())
        }
        Err(e) => Err(io(e)),
    }
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content.as_bytes())
}

/// A server that is bound and ready; [`Running::serve`] runs it.
pub struct Running {
    pub addr: SocketAddr,
    /// The one-time setup link, when no user exists yet.
    pub setup_url: Option<String>,
    pub state: AppState,
    router: Router,
    listener: TcpListener,
    shutdown_tx: watch::Sender<bool>,
}

/// Opens the store, applies migrations and builds the application, without serving yet.
pub async fn start(settings: Settings, listener: TcpListener) -> Result<Running, StartError> {
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    let store = open_store(&settings).await?;
    // The pre-receive hook every push runs (Code push rules); rewritten when it changed.
    ouro_code::hook::clean_stale(&settings.data_dir);
    if let Err(e) = ouro_code::hook::install(&settings.data_dir) {
        tracing::warn!(error = %e, "cannot write the git hooks directory; pushes will be refused");
    }
    if settings.runner_sandbox && settings.runner_slots > 0 {
        ouro_build::runner::local::sandbox_available().map_err(|why| {
            StartError::Runner(format!(
                "[runner] sandbox is on but bubblewrap cannot run jobs here: {why}. Install the \
                 `bubblewrap` package (Debian) and allow unprivileged user namespaces, or set \
                 sandbox = false"
            ))
        })?;
    }
    let secrets = SecretBox::new(&instance_secret(&settings)?);
    ouro_code::git::set_fetch_timeout(Duration::from_secs(settings.git_fetch_timeout_secs));
    let (shutdown_tx, shutting_down) = watch::channel(false);
    let users = ouro_store::accounts::count_users(&mut store.read().await?).await?;
    let base_url = settings.base_url(addr);
    let (setup_token, setup_url) = if users == 0 {
        let t = ouro_store::crypto::random_token("");
        let url = format!("{base_url}/setup?token={t}");
        (Some(ouro_store::crypto::token_hash(&t)), Some(url))
    } else {
        (None, None)
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.webhook_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let blobs = {
        let (b, dir, cap) = (
            settings.blobs.clone(),
            settings.data_dir.clone(),
            settings.artifacts.capacity_bytes,
        );
        tokio::task::spawn_blocking(move || ouro_build::blobs_s3::open(&b, &dir, cap))
            .await
            .map_err(|e| StartError::Blobs(format!("opening the blob store failed: {e}")))?
            .map_err(StartError::Blobs)?
    };
    ouro_build::blobs_s3::register(&settings.data_dir, blobs.clone());
    ouro_build::runner::set_lease(
        &settings.data_dir,
        Duration::from_secs(settings.build_lease_seconds),
    );
    // Deploy: supervised replicas in DATA_DIR/deploy behind the built-in proxy. Nothing starts
    // until `serve` restores the recorded environments.
    let proxy = ouro_deploy::proxy::Proxy::new(Default::default());
    let deploy_target = Arc::new(ouro_deploy::local_target::LocalTarget::new(
        ouro_deploy::local::Supervisor::new(
            settings.data_dir.join("deploy"),
            ouro_deploy::local::SupervisorOptions {
                // Bundles must be signed by this instance, not only carry a valid signature.
                trusted_key: Some(
                    ouro_release::signing::load_or_create(&settings.data_dir)
                        .map_err(|e| {
                            StartError::Deploy(format!(
                                "the release signing key, which deployments verify bundles with: {}",
                                e.message
                            ))
                        })?
                        .verifying_key(),
                ),
                ..Default::default()
            },
        ),
        proxy.clone(),
        settings.deploy_listen.clone(),
    ));
    // The engine drives the configured target; the local one always exists (it starts nothing
    // unless used) so its proxy and supervisor have one owner.
    let engine_target: Arc<dyn ouro_deploy::target::Target> = if settings.deploy_target
        == "kubernetes"
    {
        let client = ouro_deploy_kube::client_from_environment()
                .await
                .map_err(|e| {
                    StartError::Deploy(format!(
                        "the Kubernetes target cannot reach a cluster: {e}; set KUBECONFIG or run Ouro inside the cluster, or use `[deploy] target = \"local\"`"
                    ))
                })?;
        Arc::new(
            ouro_deploy_kube::KubeTargets::new(client, settings.deploy_kubernetes.clone())
                .map_err(|e| StartError::Deploy(e.to_string()))?,
        )
    } else {
        deploy_target.clone()
    };
    let deploy = ouro_deploy::engine::Engine::new(
        store.clone(),
        engine_target,
        ouro_deploy::engine::EngineConfig {
            data_dir: settings.data_dir.clone(),
            repos_root: ouro_code::repos::root(&settings.data_dir),
            secrets: Some(secrets.clone()),
            options: ouro_deploy::strategy::Options {
                ready_timeout: Duration::from_secs(settings.deploy_ready_timeout_secs),
            },
            keep_versions: settings.deploy_keep_versions,
        },
    );
    let state = AppState(Arc::new(Inner {
        deploy,
        deploy_target,
        blobs,
        intake_throttle: auth::Throttle::new(
            Duration::from_secs(ui::intake::THROTTLE_WINDOW_SECS),
            u32::MAX,
            ui::intake::THROTTLE_PER_IP,
        ),
        throttle: auth::Throttle::new(
            Duration::from_secs(settings.throttle_window_secs),
            settings.throttle_per_account,
            settings.throttle_per_ip,
        ),
        store,
        metrics: metrics::Metrics::with(|r| proxy.register_metrics(r)),
        secrets,
        setup_token: Mutex::new(setup_token),
        base_url,
        shutting_down,
        http,
        settings,
        openapi: std::sync::OnceLock::new(),
        log_hub: ouro_build::logview::LogHub::new(),
    }));
    // Test ingests a job's reports when its attempt ends (Build knows only the hook).
    ouro_test::hook::ReportHook::install();
    let router = app(state.clone());
    Ok(Running {
        addr,
        setup_url,
        state,
        router,
        listener,
        shutdown_tx,
    })
}

/// Registers every route: the platform's, then each phase's.
pub fn registry(state: AppState) -> Registry {
    let mut reg = Registry::new(state);
    api::register(&mut reg);
    ui::register(&mut reg);
    reg
}

/// The full application router.
pub fn app(state: AppState) -> Router {
    let (router, _) = registry(state.clone()).into_parts();
    router
        .fallback(api::fallback)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(axum::middleware::from_fn(api::catch_panic_and_headers))
        .with_state(state)
}

impl Running {
    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (bounded by `shutdown_grace_secs`) and closes the store.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Running {
            router,
            listener,
            shutdown_tx,
            state,
            ..
        } = self;
        let mut workers = webhooks::spawn_workers(state.clone());
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_plan::links::References),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_plan::rules::Automation),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_plan::notifications::Notifier),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_build::runs::PushTrigger {
                root: ouro_code::repos::root(&state.settings.data_dir),
            }),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_build::triggers::ChangeRequestTrigger {
                root: ouro_code::repos::root(&state.settings.data_dir),
            }),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_build::schedule::ScheduleSync {
                root: ouro_code::repos::root(&state.settings.data_dir),
            }),
            state.shutting_down.clone(),
        )));
        workers.push(tokio::spawn(schedule_ticker(state.clone())));
        workers.extend(
            ouro_build::runner::local::start(
                state.store.clone(),
                ouro_build::runner::local::LocalRunner {
                    data_dir: state.settings.data_dir.clone(),
                    slots: state.settings.runner_slots,
                    labels: state.settings.runner_labels.clone(),
                    log: ouro_build::logs::LogConfig {
                        cap_bytes: state.settings.build_log_cap_bytes,
                        ..Default::default()
                    },
                    secrets: state.secrets.clone(),
                    files: Some(ouro_build::runner::local::LocalFiles {
                        blobs: state.blobs.clone(),
                        settings: state.settings.artifacts.clone(),
                    }),
                    server_url: Some(state.base_url.clone()),
                    sandbox: state.settings.runner_sandbox,
                },
                state.shutting_down.clone(),
            )
            .await,
        );
        workers.push(tokio::spawn(attachment_gc(state.clone())));
        workers.push(tokio::spawn(api::artifacts::gc_task(state.clone())));
        workers.push(tokio::spawn(mirror_scheduler(state.clone())));
        workers.push(tokio::spawn(promotion_ticker(state.clone())));
        workers.push(tokio::spawn(deploy_start(state.clone())));
        // Release follows what Deploy did with approved promotions (the order of environments
        // waits for deployments; `auto_promote` requests the next environment).
        workers.push(tokio::spawn(ouro_store::consumers::run(
            state.store.clone(),
            std::sync::Arc::new(ouro_release::promotions::DeployTracker {
                repos_root: ouro_code::repos::root(&state.settings.data_dir),
            }),
            state.shutting_down.clone(),
        )));
        let grace = Duration::from_secs(state.settings.shutdown_grace_secs);
        let (fired_tx, mut fired_rx) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = shutdown_tx.send(true);
            let _ = fired_tx.send(true);
        };
        // Without TCP_NODELAY the last small write of a streamed body (the chunked terminator)
        // waits for the client's delayed ACK: about 40 ms on every streamed response, e.g.
        // twice per `git push`.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let bounded = async move {
            let _ = fired_rx.wait_for(|f| *f).await;
            tokio::time::sleep(grace).await;
            tracing::warn!("in-flight requests did not finish within {grace:?}; closing them");
        };
        tokio::select! {
            r = server => r?,
            _ = bounded => {}
        }
        // Consumers store their cursor when they see the shutdown: give them a moment to.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            futures::future::join_all(workers.iter_mut()),
        )
        .await;
        for w in workers {
            w.abort();
        }
        // The proxy stops listening; supervised replicas keep running (the next start adopts them).
        state.deploy_target.proxy().shutdown().await;
        state.store.close().await;
        Ok(())
    }
}

/// Deploy at start: the supervisor adopts the replicas that survived the last run (or restarts
/// them), the engine restores every environment's recorded version and traffic, then approved
/// promotions are deployed as they come (the `deploy.promotions` consumer) and change requests
/// get review environments (`deploy.reviews`).
async fn deploy_start(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    let restore = async {
        match state.deploy_target.supervisor().recover().await {
            Ok(r) => tracing::info!(report = ?r, "deploy: supervised replicas recovered"),
            Err(e) => tracing::error!(error = %e, "deploy: recovering supervised replicas failed"),
        }
        if let Err(e) = state.deploy.recover().await {
            tracing::error!(error = %e, "deploy: restoring the environments failed");
        }
    };
    tokio::select! {
        _ = restore => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }
    tokio::join!(
        ouro_store::consumers::run(
            state.store.clone(),
            Arc::new(ouro_deploy::engine::PromotionDeployer(state.deploy.clone())),
            state.shutting_down.clone(),
        ),
        // Review environments: a change request's green run goes to `review-N`, merging or
        // closing it tears that down.
        ouro_store::consumers::run(
            state.store.clone(),
            Arc::new(ouro_deploy::engine::ReviewDeployer(state.deploy.clone())),
            state.shutting_down.clone(),
        ),
    );
}

/// Scheduled pipelines: every 2 seconds the due `on.schedule` entries get their run (see
/// `ouro_build::schedule`; idempotent, so a restart or a second server never doubles a run).
async fn schedule_ticker(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    let root = ouro_code::repos::root(&state.settings.data_dir);
    tokio::select! {
        r = ouro_build::schedule::sync_all(&state.store, &root, ouro_core::time::now_ms()) => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "the schedules could not be read at start");
            }
        }
        _ = shutdown.wait_for(|s| *s) => return,
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            r = ouro_build::schedule::tick(&state.store, &root, ouro_core::time::now_ms()) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the schedule ticker could not create its runs");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Requested promotions are re-evaluated every 30 seconds, so a wait timer ending or a
/// deployment window opening approves them without anyone looking (see `ouro_release::promotions`).
async fn promotion_ticker(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            r = ouro_release::promotions::reevaluate(&state.store, None, ouro_core::time::now_ms()) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the promotion ticker could not re-evaluate");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Mirrors are fetched when their interval has passed; the scheduler looks every 30 seconds
/// and fetches the due ones one after another (see `ouro_code::mirror`).
async fn mirror_scheduler(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    let root = ouro_code::repos::root(&state.settings.data_dir);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            r = ouro_code::mirror::sync_due(&state.store, &root, &state.secrets) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the mirror scheduler could not read its work");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Unreferenced attachment blobs are swept a minute after start and then hourly; only blobs
/// older than an hour go (see `ouro_plan::attachments::collect_garbage`).
async fn attachment_gc(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        wait = Duration::from_secs(3600);
        match ouro_plan::attachments::collect_garbage(
            &state.store,
            &state.settings.data_dir,
            Duration::from_secs(3600),
        )
        .await
        {
            Ok(r) if r.deleted > 0 => {
                tracing::info!(
                    deleted = r.deleted,
                    bytes = r.bytes,
                    "removed unused attachment files"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "attachment sweep failed; trying again in an hour")
            }
        }
    }
}

/// Runs Ouro on `listener` until `shutdown` resolves. Prints the URL to open (and the setup link
/// on first run) to stdout.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let running = start(settings, listener).await?;
    println!("Ouro is running at {}", running.state.base_url);
    if let Some(url) = &running.setup_url {
        println!("No account exists yet. Open this one-time link to create the admin account:");
        println!("  {url}");
    }
    running.serve(shutdown).await.map_err(StartError::Listener)
}
