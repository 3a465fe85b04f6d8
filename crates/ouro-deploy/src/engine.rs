//! The deployment engine: turns "release R to environment E" into a recorded deployment driven
//! on a [`Target`] in the background, rolls back, shows what runs where, hands approved
//! promotions to itself (a ledger consumer), and after a restart restores every environment's
//! desired state.
//!
//! The `environment` a [`Target`] sees is the environment's key `PROJECT/ENVIRONMENT` (two
//! projects may both have a `staging`); [`env_key`] builds it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, Event, OuroError};
use ouro_release::promotions::ReleaseRef;
use ouro_store::Store;
use ouro_store::consumers::Consumer;
use ouro_store::crypto::SecretBox;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::deployments::{self, Deployment, NewDeployment, NewStep, Outcome};
use crate::services;
use crate::spec::{Route, Service, ServicesFile, Strategy};
use crate::strategy::{self, Moved, ServicePlan, Steps};
use crate::target::{ReplicaStatus, Split, Target, VersionSpec};

/// Who deploys approved promotions and restores environments.
pub const ACTOR: Actor = Actor::System("deploy");

/// The key a target knows an environment by.
pub fn env_key(project_slug: &str, environment: &str) -> String {
    format!("{project_slug}/{environment}")
}

pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub repos_root: PathBuf,
    /// Opens the environment's secrets (none: replicas get variables only).
    pub secrets: Option<SecretBox>,
    pub options: strategy::Options,
    /// Unpacked versions kept per service and environment beyond the protected ones
    /// (`[deploy] keep_versions`); see [`Target::prune`].
    pub keep_versions: usize,
}

/// The default of [`EngineConfig::keep_versions`].
pub const KEEP_VERSIONS: usize = 3;

/// What an environment should run, kept with its record so a restarted server restores it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Desired {
    pub release_id: i64,
    pub version: String,
    pub services: Vec<DesiredService>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DesiredService {
    pub service: Service,
    pub bundle: PathBuf,
    pub route: Route,
}

/// An environment as the API and the UI show it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EnvironmentView {
    pub name: String,
    /// The live version (none before the first successful deployment).
    pub version: Option<String>,
    /// What a rollback would put back.
    pub previous_version: Option<String>,
    pub services: Vec<ServiceView>,
    /// Every replica of every service and version, with its health.
    pub replicas: Vec<ReplicaView>,
    /// The running deployment, if any.
    pub deploying: Option<i64>,
    pub deployments: Vec<Deployment>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ServiceView {
    pub name: String,
    pub strategy: String,
    pub listen: Option<String>,
    pub host: Option<String>,
    /// Percent of traffic per version.
    pub traffic: BTreeMap<String, u8>,
    /// The proxy's golden signals per running version since the server started: requests,
    /// errors (5xx and failed upstream requests), error rate and p99 (the latency bucket bound).
    pub signals: BTreeMap<String, crate::target::Window>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ReplicaView {
    pub service: String,
    pub replica: String,
    pub version: String,
    /// `starting`, `ready`, `unready`, `restarting`, `failed`, `stopping`, `stopped`.
    pub health: String,
    pub restarts: u32,
    pub in_flight: u64,
    pub address: String,
    /// The process of the replica (local target).
    pub pid: Option<u32>,
}

pub struct Engine {
    store: Store,
    target: Arc<dyn Target>,
    cfg: EngineConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Background deployments by (project id, environment).
    tasks: HashMap<(i64, String), tokio::task::JoinHandle<()>>,
    /// The last traffic split per (environment key, service).
    splits: HashMap<(String, String), Split>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Prepared {
    release: ReleaseRef,
    services: ServicesFile,
    bundle: PathBuf,
    env: BTreeMap<String, String>,
}

impl Engine {
    pub fn new(store: Store, target: Arc<dyn Target>, cfg: EngineConfig) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            target,
            cfg,
            state: Mutex::new(State::default()),
        })
    }

    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// Starts deploying release `version` to `environment` and returns the running deployment.
    pub async fn deploy(
        self: &Arc<Self>,
        project: (i64, &str),
        environment: &str,
        version: &str,
        actor: &Actor,
        promotion_id: Option<i64>,
    ) -> Result<Deployment, OuroError> {
        let release =
            ouro_release::promotions::release(&mut self.store.read().await?, project.0, version)
                .await?;
        self.begin(
            project,
            environment,
            release,
            None,
            deployments::KIND_DEPLOY,
            actor,
            promotion_id,
        )
        .await
    }

    /// Puts the environment's previous release back live (a blue-green switch: instant when
    /// the previous version is still warm).
    pub async fn rollback(
        self: &Arc<Self>,
        project: (i64, &str),
        environment: &str,
        actor: &Actor,
    ) -> Result<Deployment, OuroError> {
        let mut conn = self.store.read().await?;
        let rec = deployments::environment(&mut conn, project.0, environment).await?;
        let Some((prev_id, prev_version)) = rec
            .as_ref()
            .and_then(|r| Some((r.previous_release_id?, r.previous_version.clone()?)))
        else {
            return Err(OuroError::new(
                ErrorCode::DeployNothingToRollBack,
                format!(
                    "`{environment}` has no earlier release to go back to: it was deployed at most once"
                ),
            ));
        };
        let release = ouro_release::promotions::release(&mut conn, project.0, &prev_version)
            .await
            .map_err(OuroError::from)?;
        drop(conn);
        debug_assert_eq!(release.id, prev_id);
        self.begin(
            project,
            environment,
            release,
            None,
            deployments::KIND_ROLLBACK,
            actor,
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn begin(
        self: &Arc<Self>,
        project: (i64, &str),
        environment: &str,
        release: ReleaseRef,
        bundle: Option<PathBuf>,
        kind: &str,
        actor: &Actor,
        promotion_id: Option<i64>,
    ) -> Result<Deployment, OuroError> {
        if release.state != "published" {
            return Err(OuroError::new(
                ErrorCode::PromotionNotPublished,
                format!(
                    "release {} is {}: only published releases are deployed",
                    release.version, release.state
                ),
            ));
        }
        let prepared = self.prepare(project, environment, release, bundle).await?;
        let rec =
            deployments::environment(&mut self.store.read().await?, project.0, environment).await?;
        let from = rec.as_ref().and_then(|r| r.live_version.clone());
        let strategy_name = if kind == deployments::KIND_ROLLBACK {
            "blue-green"
        } else {
            prepared
                .services
                .services
                .values()
                .next()
                .map(|s| strategy::name(&s.strategy))
                .unwrap_or("blue-green")
        };
        let id = deployments::start(
            &self.store,
            NewDeployment {
                project_id: project.0,
                project_slug: project.1,
                environment,
                release_id: prepared.release.id,
                version: &prepared.release.version,
                from_version: from.as_deref(),
                kind,
                strategy: strategy_name,
                promotion_id,
                actor,
            },
        )
        .await?;
        let me = self.clone();
        let (pid, slug, env) = (project.0, project.1.to_string(), environment.to_string());
        let actor2 = actor.clone();
        let rollback = kind == deployments::KIND_ROLLBACK;
        let task = tokio::spawn(async move {
            me.drive(
                (pid, &slug),
                &env,
                id,
                prepared,
                from.as_deref(),
                rollback,
                &actor2,
            )
            .await;
        });
        lock(&self.state)
            .tasks
            .insert((project.0, environment.to_string()), task);
        Ok(deployments::get(&mut self.store.read().await?, project.0, id).await?)
    }

    async fn prepare(
        &self,
        project: (i64, &str),
        environment: &str,
        release: ReleaseRef,
        bundle: Option<PathBuf>,
    ) -> Result<Prepared, OuroError> {
        let dir = ouro_code::repos::dir(&self.cfg.repos_root, release.project_id, release.repo_id);
        let Some(text) = file_at(&dir, &release.sha, services::FILE).await? else {
            return Err(OuroError::new(
                ErrorCode::DeployNoServices,
                format!(
                    "release {} has no {} at its commit {}: add the file to say what to run",
                    release.version,
                    services::FILE,
                    &release.sha[..release.sha.len().min(12)]
                ),
            ));
        };
        let services = services::parse(services::FILE, &text).map_err(|diags| {
            OuroError::new(
                ErrorCode::DeployServicesInvalid,
                format!(
                    "{} of release {} has {} problem(s): {}",
                    services::FILE,
                    release.version,
                    diags.len(),
                    diags.first().map(|d| d.one_line()).unwrap_or_default()
                ),
            )
            .with_details(json!({
                "diagnostics": diags.iter().map(|d| d.one_line()).collect::<Vec<_>>()
            }))
        })?;
        // Every later step sees the services as they run here (replicas, strategy, env).
        let services = services.for_environment(environment);
        if services.services.is_empty() {
            return Err(OuroError::new(
                ErrorCode::DeployNoServices,
                format!(
                    "{} of release {} declares no service",
                    services::FILE,
                    release.version
                ),
            ));
        }
        let bundle = match bundle {
            Some(b) => b,
            None => self.fetch_bundle(project.1, &release.version).await?,
        };
        let mut env = BTreeMap::new();
        if let Some(sbox) = &self.cfg.secrets {
            let vars = ouro_build::secrets::for_job(
                &mut self.store.read().await?,
                sbox,
                project.0,
                Some(environment),
                true,
            )
            .await?;
            env.extend(vars.vars);
            env.extend(vars.secrets);
        }
        Ok(Prepared {
            release,
            services,
            bundle,
            env,
        })
    }

    /// The release's bundle as a local file, verified with this instance's release key.
    async fn fetch_bundle(&self, slug: &str, version: &str) -> Result<PathBuf, OuroError> {
        let unavailable = |why: String| {
            OuroError::new(
                ErrorCode::DeployBundleUnavailable,
                format!("release {version} cannot be deployed: {why}"),
            )
        };
        let Some((_, bref)) =
            ouro_release::bundle::find(&mut self.store.read().await?, slug, version).await?
        else {
            return Err(unavailable(
                "it has no bundle (publish the release to build one)".into(),
            ));
        };
        let dir = self.cfg.data_dir.join("deploy").join("bundles");
        let path = dir.join(format!("{}.tar.zst", bref.sha256));
        let data_dir = self.cfg.data_dir.clone();
        let sha = bref.sha256.clone();
        let out = path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let key = ouro_release::signing::load_or_create(&data_dir)
                .map_err(|e| e.message)?
                .verifying_key();
            if !out.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let blobs = ouro_build::blobs_s3::for_data_dir(&data_dir);
                let mut r = blobs
                    .open(&sha)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "its bundle is missing from the blob store".to_string())?;
                let tmp = dir.join(format!(".{sha}.part"));
                let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
                std::io::copy(&mut r, &mut f).map_err(|e| e.to_string())?;
                f.sync_all().map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
            }
            let f = std::fs::File::open(&out).map_err(|e| e.to_string())?;
            ouro_release::bundle::verify(std::io::BufReader::new(f), Some(&key))
                .map_err(|e| format!("its bundle fails verification: {e}"))?;
            Ok(())
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(unavailable)?;
        Ok(path)
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        self: &Arc<Self>,
        project: (i64, &str),
        environment: &str,
        id: i64,
        p: Prepared,
        from: Option<&str>,
        rollback: bool,
        actor: &Actor,
    ) {
        let key = env_key(project.1, environment);
        let recorder = Recorder {
            store: &self.store,
            project,
            id,
            actor,
        };
        let mut desired = Desired {
            release_id: p.release.id,
            version: p.release.version.clone(),
            services: Vec::new(),
        };
        let mut moved: Vec<(String, Route)> = Vec::new();
        let mut outcome = None;
        let mut warm: Vec<(String, u64)> = Vec::new();
        for svc in p.services.services.values() {
            let route = svc.route_for(environment).unwrap_or_default();
            let spec = VersionSpec {
                project: project.1.to_string(),
                environment: environment.to_string(),
                service: svc.clone(),
                version: p.release.version.clone(),
                bundle: p.bundle.clone(),
                env: p.env.clone(),
            };
            let strategy = match (&svc.strategy, rollback) {
                (Strategy::BlueGreen { .. }, _) | (_, false) => None,
                (Strategy::Canary(c), true) => Some(Strategy::BlueGreen {
                    keep_warm_ms: c.keep_warm_ms,
                }),
                (_, true) => Some(Strategy::BlueGreen { keep_warm_ms: 0 }),
            };
            let plan = ServicePlan {
                new: &spec,
                old: from,
                route: &route,
                strategy,
            };
            match strategy::run(self.target.as_ref(), &recorder, &plan, &self.cfg.options).await {
                Moved::Live { keep_warm_ms } => {
                    lock(&self.state).splits.insert(
                        (key.clone(), svc.name.clone()),
                        Split::all(&p.release.version),
                    );
                    if let Some(old) = from.filter(|o| *o != p.release.version) {
                        if keep_warm_ms > 0 {
                            warm.push((svc.name.clone(), keep_warm_ms));
                        }
                        let _ = old;
                    }
                    moved.push((svc.name.clone(), route.clone()));
                    desired.services.push(DesiredService {
                        service: svc.clone(),
                        bundle: p.bundle.clone(),
                        route,
                    });
                }
                Moved::Failed {
                    reason,
                    rolled_back,
                } => {
                    // Services already moved go back to the old version: an environment runs
                    // one release.
                    if let Some(old) = from {
                        for (name, r) in &moved {
                            if let Some(s) = p.services.services.get(name) {
                                let t = ouro_core::time::now_ms();
                                let res = self.target.route(&key, s, r, &Split::all(old)).await;
                                lock(&self.state)
                                    .splits
                                    .insert((key.clone(), name.clone()), Split::all(old));
                                recorder
                                    .record(name, "rollback", res.is_ok(), json!({"to": old}), t)
                                    .await;
                                // The new version lost its traffic again: nothing keeps it.
                                let new_v = p.release.version.as_str();
                                if res.is_ok() && old != new_v {
                                    let _ = self.target.drain(&key, name, new_v, &s.drain).await;
                                    let t = ouro_core::time::now_ms();
                                    let r = self.target.stop(&key, name, new_v).await;
                                    recorder
                                        .record(
                                            name,
                                            "stop",
                                            r.is_ok(),
                                            json!({"version": new_v,
                                                   "error": r.err().map(|e| e.to_string())}),
                                            t,
                                        )
                                        .await;
                                }
                            }
                        }
                    }
                    outcome = Some(if rolled_back || !moved.is_empty() {
                        Outcome::RolledBack { reason }
                    } else {
                        Outcome::Failed { reason }
                    });
                    break;
                }
            }
        }
        let outcome = outcome.unwrap_or_else(|| Outcome::Succeeded {
            desired: serde_json::to_string(&desired).unwrap_or_default(),
        });
        if let Err(e) = deployments::finish(&self.store, project, id, actor, &outcome).await {
            tracing::error!(deployment = id, error = %e, "recording the end of a deployment failed");
        }
        let names: Vec<String> = p.services.services.keys().cloned().collect();
        self.prune(project, environment, &names).await;
        // The old version stays warm for a quick rollback, then stops unless it is live again.
        if let (Outcome::Succeeded { .. }, Some(old)) = (&outcome, from) {
            for (svc, ms) in warm {
                let me = self.clone();
                let (key, old) = (key.clone(), old.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    me.stop_if_idle(&key, &svc, &old).await;
                });
            }
        }
    }

    /// Deploys a change request's successful pipeline run to its review environment
    /// `review-REPO-N` when a service of the run's `.ouro/services.yml` has a `review` route: the
    /// run's artifacts become a bundle signed by this instance (version `crN-SHA12`). `None`:
    /// nothing to review-deploy.
    pub async fn deploy_review(
        self: &Arc<Self>,
        project: (i64, &str),
        run_id: i64,
        actor: &Actor,
    ) -> Result<Option<Deployment>, OuroError> {
        // Build's public run API (Deploy does not read Build's tables).
        let Ok(run) = ouro_build::runs::get_by_id(&mut self.store.read().await?, run_id).await
        else {
            return Ok(None);
        };
        let (Some(cr), Some(repo_id)) = (run.cr_number, run.repo_id) else {
            return Ok(None);
        };
        if run.status != "success" || run.project_id != project.0 {
            return Ok(None);
        }
        let sha = run.sha;
        let dir = ouro_code::repos::dir(&self.cfg.repos_root, project.0, repo_id);
        let Some(text) = file_at(&dir, &sha, services::FILE).await? else {
            return Ok(None);
        };
        let Ok(file) = services::parse(services::FILE, &text) else {
            // A broken file fails the release path with its diagnostics; a review environment
            // is best effort.
            return Ok(None);
        };
        if !file
            .services
            .values()
            .any(|s| s.routes.contains_key("review"))
        {
            return Ok(None);
        }
        let Some(repo) =
            ouro_code::repos::by_id(&mut self.store.read().await?, project.0, repo_id).await?
        else {
            return Ok(None);
        };
        let version = format!("cr{cr}-{}", &sha[..sha.len().min(12)]);
        let bundle = review_bundle(
            &self.store,
            &self.cfg.data_dir,
            project.1,
            run_id,
            &version,
            &sha,
        )
        .await?;
        let release = ReleaseRef {
            id: 0,
            project_id: project.0,
            repo_id,
            version,
            sha,
            state: "published".into(),
            build_run_id: Some(run_id),
            test_summary: None,
            publisher: None,
        };
        let env = review_environment(&repo.name, cr);
        self.begin(
            project,
            &env,
            release,
            Some(bundle),
            deployments::KIND_REVIEW,
            actor,
            None,
        )
        .await
        .map(Some)
    }

    /// Tears a review environment down (its change request was merged or closed): every
    /// version stops, its routes go, its record is removed; recorded as a `teardown`.
    pub async fn teardown(
        self: &Arc<Self>,
        project: (i64, &str),
        environment: &str,
        actor: &Actor,
    ) -> Result<Option<Deployment>, OuroError> {
        let rec =
            deployments::environment(&mut self.store.read().await?, project.0, environment).await?;
        let Some(rec) = rec else { return Ok(None) };
        let desired: Option<Desired> = rec
            .desired
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        let version = rec.live_version.clone().unwrap_or_default();
        let id = deployments::start(
            &self.store,
            NewDeployment {
                project_id: project.0,
                project_slug: project.1,
                environment,
                release_id: rec.live_release_id.unwrap_or(0),
                version: &version,
                from_version: None,
                kind: deployments::KIND_TEARDOWN,
                strategy: "teardown",
                promotion_id: None,
                actor,
            },
        )
        .await?;
        let key = env_key(project.1, environment);
        let recorder = Recorder {
            store: &self.store,
            project,
            id,
            actor,
        };
        let mut versions: Vec<String> = [rec.live_version.clone(), rec.previous_version.clone()]
            .into_iter()
            .flatten()
            .collect();
        versions.dedup();
        for ds in desired.iter().flat_map(|d| d.services.iter()) {
            for v in &versions {
                let t = ouro_core::time::now_ms();
                let r = self.target.stop(&key, &ds.service.name, v).await;
                recorder
                    .record(
                        &ds.service.name,
                        "stop",
                        r.is_ok(),
                        json!({"version": v, "error": r.err().map(|e| e.to_string())}),
                        t,
                    )
                    .await;
            }
            self.target.unroute(&key, &ds.service.name);
            lock(&self.state)
                .splits
                .remove(&(key.clone(), ds.service.name.clone()));
        }
        deployments::finish(&self.store, project, id, actor, &Outcome::TornDown).await?;
        Ok(Some(
            deployments::get(&mut self.store.read().await?, project.0, id).await?,
        ))
    }

    /// Records a deployment of an approved promotion that could not start, as failed.
    async fn record_refusal(
        &self,
        project: (i64, &str),
        environment: &str,
        version: &str,
        promotion: Option<i64>,
        why: &OuroError,
    ) -> Result<(), OuroError> {
        let release_id =
            ouro_release::promotions::release(&mut self.store.read().await?, project.0, version)
                .await
                .map(|r| r.id)
                .unwrap_or(0);
        let id = deployments::start(
            &self.store,
            NewDeployment {
                project_id: project.0,
                project_slug: project.1,
                environment,
                release_id,
                version,
                from_version: None,
                kind: deployments::KIND_DEPLOY,
                strategy: "-",
                promotion_id: promotion,
                actor: &ACTOR,
            },
        )
        .await?;
        deployments::finish(
            &self.store,
            project,
            id,
            &ACTOR,
            &Outcome::Failed {
                reason: why.message.clone(),
            },
        )
        .await
    }

    /// Removes old unpacked versions of the services beyond `keep_versions`, never the live
    /// one, the previous one (a rollback goes there) or one an unfinished deployment of the
    /// environment names; the target itself never removes a version with a running replica.
    async fn prune(&self, project: (i64, &str), environment: &str, services: &[String]) {
        let protected = async {
            let mut conn = self.store.read().await?;
            let rec = deployments::environment(&mut conn, project.0, environment).await?;
            let recent = deployments::list(
                &mut conn,
                project.0,
                Some(environment),
                None,
                deployments::RECENT,
            )
            .await?;
            let mut keep: Vec<String> = Vec::new();
            if let Some(r) = rec {
                keep.extend(r.live_version);
                keep.extend(r.previous_version);
            }
            for d in recent.into_iter().filter(|d| d.finished_at.is_none()) {
                keep.push(d.version);
                keep.extend(d.from_version);
            }
            Ok::<_, OuroError>(keep)
        }
        .await;
        let protected = match protected {
            Ok(p) => p,
            Err(e) => {
                // Without knowing what is live, removing nothing is the safe choice.
                tracing::warn!(environment, error = %e, "retention skipped: reading the environment failed");
                return;
            }
        };
        let key = env_key(project.1, environment);
        for svc in services {
            match self
                .target
                .prune(&key, svc, self.cfg.keep_versions, &protected)
                .await
            {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(environment = %key, service = %svc, ?removed, "removed old versions")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(environment = %key, service = %svc, error = %e, "removing old versions failed")
                }
            }
        }
    }

    /// Stops `version` of a service unless traffic went back to it.
    async fn stop_if_idle(&self, key: &str, service: &str, version: &str) {
        let live = lock(&self.state)
            .splits
            .get(&(key.to_string(), service.to_string()))
            .cloned();
        let in_use = live.is_some_and(|s| {
            s.stable == version || s.canary.as_ref().is_some_and(|(v, _)| v == version)
        });
        if !in_use && let Err(e) = self.target.stop(key, service, version).await {
            tracing::warn!(service, version, error = %e, "stopping a warm version failed");
        }
    }

    /// After a restart: versions of a service other than the live one that the target still
    /// runs (a version kept warm when the server stopped; its timer died with the server) stay
    /// warm for the service's keep-warm time from now, then stop unless they are live again.
    fn retire_adopted(self: &Arc<Self>, key: &str, ds: &DesiredService, live: &str) {
        let keep_warm_ms = match &ds.service.strategy {
            Strategy::BlueGreen { keep_warm_ms } => *keep_warm_ms,
            Strategy::Canary(c) => c.keep_warm_ms,
            _ => 0,
        };
        let mut others: Vec<String> = self
            .target
            .status(key, &ds.service.name)
            .into_iter()
            .filter(|r| r.version != live && r.health != "stopped")
            .map(|r| r.version)
            .collect();
        others.sort();
        others.dedup();
        for version in others {
            tracing::info!(environment = %key, service = %ds.service.name, %version,
                keep_warm_ms, "a version adopted after the restart is not live: it will stop");
            let me = self.clone();
            let (key, svc) = (key.to_string(), ds.service.name.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(keep_warm_ms)).await;
                me.stop_if_idle(&key, &svc, &version).await;
            });
        }
    }

    /// Waits for the background deployment of an environment (tests, shutdown).
    pub async fn wait(&self, project_id: i64, environment: &str) {
        let task = lock(&self.state)
            .tasks
            .remove(&(project_id, environment.to_string()));
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// What runs in an environment (404 when nothing was ever deployed there).
    pub async fn view(
        &self,
        project: (i64, &str),
        environment: &str,
    ) -> Result<EnvironmentView, OuroError> {
        let mut conn = self.store.read().await?;
        let rec = deployments::environment(&mut conn, project.0, environment).await?;
        let recent = deployments::list(
            &mut conn,
            project.0,
            Some(environment),
            None,
            deployments::RECENT,
        )
        .await?;
        if rec.is_none() && recent.is_empty() {
            return Err(OuroError::new(
                ErrorCode::DeployEnvironmentNotFound,
                format!("nothing was deployed to `{environment}` in this project yet"),
            ));
        }
        let deploying = recent.iter().find(|d| d.state == "running").map(|d| d.id);
        let desired: Option<Desired> = rec
            .as_ref()
            .and_then(|r| r.desired.as_deref())
            .and_then(|d| serde_json::from_str(d).ok());
        let key = env_key(project.1, environment);
        let mut services = Vec::new();
        let mut replicas = Vec::new();
        for ds in desired.iter().flat_map(|d| d.services.iter()) {
            let split = lock(&self.state)
                .splits
                .get(&(key.clone(), ds.service.name.clone()))
                .cloned()
                .or_else(|| desired.as_ref().map(|d| Split::all(&d.version)));
            let mut traffic = BTreeMap::new();
            if let Some(s) = split {
                let canary = s.canary.as_ref().map(|(_, w)| *w).unwrap_or(0);
                traffic.insert(s.stable.clone(), 100 - canary.min(100));
                if let Some((v, w)) = s.canary {
                    traffic.insert(v, w.min(100));
                }
            }
            let status = self.target.status(&key, &ds.service.name);
            let mut versions: Vec<String> = traffic.keys().cloned().collect();
            versions.extend(status.iter().map(|r| r.version.clone()));
            versions.sort();
            versions.dedup();
            let signals = versions
                .into_iter()
                .map(|v| {
                    let w = self
                        .target
                        .stats(&key, &ds.service.name, &v)
                        .since(&crate::target::TrafficStats::default());
                    (v, w)
                })
                .collect();
            services.push(ServiceView {
                signals,
                name: ds.service.name.clone(),
                strategy: strategy::name(&ds.service.strategy).to_string(),
                listen: self
                    .target
                    .endpoint(&key, &ds.service.name)
                    .or_else(|| ds.route.listen.clone()),
                host: ds.route.host.clone(),
                traffic,
            });
            for r in status {
                replicas.push(replica_view(&ds.service.name, r));
            }
        }
        Ok(EnvironmentView {
            name: environment.to_string(),
            version: rec.as_ref().and_then(|r| r.live_version.clone()),
            previous_version: rec.as_ref().and_then(|r| r.previous_version.clone()),
            services,
            replicas,
            deploying,
            deployments: recent,
        })
    }

    /// After a restart: running deployments are marked failed (they were interrupted), then
    /// every environment's desired state is restored on the target (started, ready, routed).
    pub async fn recover(self: &Arc<Self>) -> Result<(), OuroError> {
        let running = deployments::all_running(&mut self.store.read().await?).await?;
        for (project_id, d) in running {
            let slug = project_slug(&self.store, project_id).await?;
            deployments::finish(
                &self.store,
                (project_id, &slug),
                d.id,
                &ACTOR,
                &Outcome::Failed {
                    reason: "interrupted by a restart of the server; the environment keeps its previous live version".into(),
                },
            )
            .await?;
        }
        let envs = deployments::all_desired(&mut self.store.read().await?).await?;
        for rec in envs {
            let Some(desired) = rec
                .desired
                .as_deref()
                .and_then(|d| serde_json::from_str::<Desired>(d).ok())
            else {
                continue;
            };
            let slug = project_slug(&self.store, rec.project_id).await?;
            let key = env_key(&slug, &rec.name);
            for ds in &desired.services {
                let spec = VersionSpec {
                    project: slug.clone(),
                    environment: rec.name.clone(),
                    service: ds.service.clone(),
                    version: desired.version.clone(),
                    bundle: ds.bundle.clone(),
                    env: BTreeMap::new(),
                };
                let restored = async {
                    self.target.start(&spec).await?;
                    self.target
                        .wait_ready(
                            &key,
                            &ds.service.name,
                            &desired.version,
                            self.cfg.options.ready_timeout,
                        )
                        .await?;
                    self.target
                        .route(&key, &ds.service, &ds.route, &Split::all(&desired.version))
                        .await
                }
                .await;
                match restored {
                    Ok(()) => {
                        lock(&self.state).splits.insert(
                            (key.clone(), ds.service.name.clone()),
                            Split::all(&desired.version),
                        );
                    }
                    Err(e) => tracing::error!(environment = %key, service = %ds.service.name,
                        error = %e, "restoring a deployed service failed"),
                }
                self.retire_adopted(&key, ds, &desired.version);
            }
            let names: Vec<String> = desired
                .services
                .iter()
                .map(|d| d.service.name.clone())
                .collect();
            self.prune((rec.project_id, &slug), &rec.name, &names).await;
        }
        Ok(())
    }
}

/// The review environment of change request `number` of repository `repo`: change request
/// numbers count per repository, so two repositories of a project each have a `!1`.
pub fn review_environment(repo: &str, number: i64) -> String {
    format!("review-{repo}-{number}")
}

/// The name review environments had before it carried the repository (`review-N`); such an
/// environment is still torn down when change request N of any of the project's
/// repositories is merged or closed (which repository it came from is not recorded).
pub fn legacy_review_environment(number: i64) -> String {
    format!("review-{number}")
}

/// A bundle of a run's artifacts, signed by this instance, in DATA_DIR/deploy/bundles.
async fn review_bundle(
    store: &Store,
    data_dir: &Path,
    project_slug: &str,
    run_id: i64,
    version: &str,
    sha: &str,
) -> Result<PathBuf, OuroError> {
    use ouro_release::bundle::{FORMAT, Manifest, ManifestFile};
    let artifacts = ouro_build::artifacts::list_for_run(&mut store.read().await?, run_id).await?;
    let mut files: BTreeMap<String, ManifestFile> = BTreeMap::new();
    for a in artifacts.into_iter().filter(|a| !a.expired) {
        // Two jobs keeping the same path: the later one goes under its job's name.
        let mut path = a.path.clone();
        if files.get(&path).is_some_and(|f| f.sha256 != a.sha256) {
            path = format!("{}/{}", a.job, a.path);
        }
        files.insert(
            path.clone(),
            ManifestFile {
                path,
                sha256: a.sha256,
                size: a.size.max(0) as u64,
            },
        );
    }
    let manifest = Manifest {
        format: FORMAT,
        project: project_slug.to_string(),
        version: version.to_string(),
        tag: String::new(),
        sha: sha.to_string(),
        created_at: ouro_core::time::now_ms(),
        files: files.into_values().collect(),
    };
    let dir = data_dir.join("deploy").join("bundles");
    let path = dir.join(format!("{version}.tar.zst"));
    let data_dir = data_dir.to_path_buf();
    let out = path.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        manifest.check()?;
        let key = ouro_release::signing::load_or_create(&data_dir).map_err(|e| e.message)?;
        let blobs = ouro_build::blobs_s3::for_data_dir(&data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tmp = dir.join(format!(".{}.part", manifest.version));
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut readers = Vec::new();
        for m in &manifest.files {
            let r = blobs
                .open(&m.sha256)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the artifact {} is missing from the blob store", m.path))?;
            readers.push((m.path.clone(), r));
        }
        ouro_release::bundle::write(&mut f, &manifest, readers, &key).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &out).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| OuroError::internal())?
    .map_err(|why| {
        OuroError::new(
            ErrorCode::DeployBundleUnavailable,
            format!("the review environment's bundle cannot be made: {why}"),
        )
    })?;
    Ok(path)
}

fn replica_view(service: &str, r: ReplicaStatus) -> ReplicaView {
    ReplicaView {
        service: service.to_string(),
        replica: r.replica,
        version: r.version,
        health: r.health,
        restarts: r.restarts,
        in_flight: r.in_flight,
        address: r.address,
        pid: r.pid,
    }
}

async fn project_slug(store: &Store, project_id: i64) -> Result<String, OuroError> {
    Ok(ouro_store::q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut store.read().await?)
        .await?
        .text("slug")?)
}

/// `file` at `sha` in the bare repository `dir`, read through Build's cache of files at a
/// commit (`None`: no such file or commit; a file that is not UTF-8 is an invalid services file).
async fn file_at(dir: &Path, sha: &str, file: &str) -> Result<Option<String>, OuroError> {
    match ouro_build::runner::cache::file_at(dir, sha, file).await {
        Ok(text) => Ok(Some(text.as_str().to_string())),
        Err(why) if why.ends_with("is not valid UTF-8") => Err(OuroError::new(
            ErrorCode::DeployServicesInvalid,
            format!("{file} is not valid UTF-8"),
        )),
        Err(_) => Ok(None),
    }
}

struct Recorder<'a> {
    store: &'a Store,
    project: (i64, &'a str),
    id: i64,
    actor: &'a Actor,
}

impl Steps for Recorder<'_> {
    fn record<'b>(
        &'b self,
        service: &'b str,
        name: &'b str,
        ok: bool,
        detail: Value,
        started_at: i64,
    ) -> BoxFuture<'b, ()> {
        Box::pin(async move {
            let step = NewStep {
                service,
                name,
                ok,
                detail,
                started_at,
                finished_at: ouro_core::time::now_ms(),
            };
            if let Err(e) =
                deployments::step(self.store, self.project, self.id, self.actor, step).await
            {
                tracing::error!(deployment = self.id, error = %e, "recording a deployment step failed");
            }
        })
    }
}

/// Deploys approved promotions: the ledger consumer `deploy.promotions`.
pub struct PromotionDeployer(pub Arc<Engine>);

impl Consumer for PromotionDeployer {
    fn name(&self) -> &'static str {
        "deploy.promotions"
    }

    fn handle<'a>(
        &'a self,
        _store: &'a Store,
        event: &'a Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            if event.kind != ev::PROMOTION_APPROVED.name {
                return Ok(());
            }
            let (Some(project_id), Some(slug)) = (event.project_id, event.project.as_deref())
            else {
                return Ok(());
            };
            let text = |k: &str| {
                event
                    .payload
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let (Some(version), Some(environment)) = (text("release"), text("environment")) else {
                return Ok(());
            };
            let promotion = event.subject.id.parse::<i64>().ok();
            match self
                .0
                .deploy(
                    (project_id, slug),
                    &environment,
                    &version,
                    &ACTOR,
                    promotion,
                )
                .await
            {
                Ok(_) => Ok(()),
                // A release without services has nothing to run.
                Err(e) if e.code == ErrorCode::DeployNoServices => Ok(()),
                // Another deployment of the environment is running: try again later.
                Err(e) if e.code == ErrorCode::DeployInProgress => Err(e),
                // Anything else the release or its files cause (a broken services file, no
                // bundle): recorded as a failed deployment with the reason, so the environment
                // page and Release (which waits for the deployment) see it.
                Err(e) if e.code.http_status() < 500 => {
                    self.0
                        .record_refusal((project_id, slug), &environment, &version, promotion, &e)
                        .await
                }
                Err(e) => Err(e),
            }
        })
    }
}

/// Review environments: a change request's successful pipeline run is deployed to
/// `review-REPO-N`; merging or closing the change request tears it down. The ledger consumer
/// `deploy.reviews`.
pub struct ReviewDeployer(pub Arc<Engine>);

impl Consumer for ReviewDeployer {
    fn name(&self) -> &'static str {
        "deploy.reviews"
    }

    fn handle<'a>(
        &'a self,
        _store: &'a Store,
        event: &'a Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            let (Some(project_id), Some(slug)) = (event.project_id, event.project.as_deref())
            else {
                return Ok(());
            };
            if event.kind == ev::PIPELINE_FINISHED.name {
                if event.payload.get("status").and_then(Value::as_str) != Some("success") {
                    return Ok(());
                }
                let Ok(run_id) = event.subject.id.parse::<i64>() else {
                    return Ok(());
                };
                return match self
                    .0
                    .deploy_review((project_id, slug), run_id, &ACTOR)
                    .await
                {
                    Ok(_) => Ok(()),
                    // The previous review deployment is still running: try again shortly.
                    Err(e) if e.code == ErrorCode::DeployInProgress => Err(e),
                    Err(e) => {
                        tracing::info!(run_id, reason = %e.message, "a review environment was not deployed");
                        Ok(())
                    }
                };
            }
            if event.kind == ev::CR_MERGED.name || event.kind == ev::CR_CLOSED.name {
                let Some(number) = event.payload.get("number").and_then(Value::as_i64) else {
                    return Ok(());
                };
                let mut envs = vec![legacy_review_environment(number)];
                envs.extend(
                    event
                        .payload
                        .get("repo")
                        .and_then(Value::as_str)
                        .map(|repo| review_environment(repo, number)),
                );
                for env in envs {
                    match self.0.teardown((project_id, slug), &env, &ACTOR).await {
                        Ok(_) => {}
                        Err(e) if e.code == ErrorCode::DeployInProgress => return Err(e),
                        Err(e) => {
                            tracing::warn!(%env, reason = %e.message, "tearing a review environment down failed");
                        }
                    }
                }
                return Ok(());
            }
            Ok(())
        })
    }
}
