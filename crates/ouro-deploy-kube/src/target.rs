//! [`KubeTarget`]: the [`Target`] interface on a Kubernetes cluster.
//!
//! start → server-side apply of the version's Secret and Deployment; wait_ready → poll the
//! Deployment's status; route → apply the Service (selector) and scale Deployments for a
//! canary; drain → give endpoint removal time to reach the nodes; stop → delete the
//! Deployment and its Secret; status → the pods' readiness and restarts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service as KubeService};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use ouro_deploy::spec::{Drain, Route, Service};
use ouro_deploy::target::{
    DrainReport, LATENCY_BUCKETS_MS, ReplicaStatus, Split, Target, TargetError, TrafficStats,
    VersionSpec,
};
use serde_json::json;

use crate::KubeError;
use crate::manifests::{self, Selection, Workload};
use crate::names::{ANNOTATION_VERSION, LABEL_VERSION, deployment_name, env_secret_name, slug};
use crate::settings::KubeSettings;

/// The Kubernetes target of one project (namespaces are per project and environment).
pub struct KubeTarget {
    client: Client,
    settings: KubeSettings,
    project: String,
    /// The pods last listed per (environment, service): [`Target::status`] is synchronous, so
    /// it answers from here; [`KubeTarget::refresh_status`] and every route/ready/stop update it.
    statuses: Mutex<BTreeMap<(String, String), Vec<ReplicaStatus>>>,
}

/// Where a Deployment stands.
enum Progress {
    Ready,
    Waiting(String),
    /// Kubernetes gave up (progress deadline exceeded): waiting longer will not help.
    Failed(String),
}

impl KubeTarget {
    pub fn new(client: Client, settings: KubeSettings, project: &str) -> Result<Self, KubeError> {
        settings.check()?;
        Ok(KubeTarget {
            client,
            settings,
            project: project.to_string(),
            statuses: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    fn namespace(&self, environment: &str) -> String {
        self.settings.namespace_for(&self.project, environment)
    }

    fn api<K>(&self, environment: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace(environment))
    }

    fn apply_params(&self) -> PatchParams {
        PatchParams::apply(&self.settings.field_manager).force()
    }

    /// Applies the version's Secret and Deployment (idempotent: applying the same objects
    /// again changes nothing).
    pub async fn start_version(&self, spec: &VersionSpec) -> Result<(), KubeError> {
        if spec.project != self.project {
            return Err(KubeError::Refused(format!(
                "this Kubernetes target deploys project {}, not {}",
                self.project, spec.project
            )));
        }
        let env_names: Vec<String> = spec.env.keys().cloned().collect();
        let w = Workload {
            project: &spec.project,
            environment: &spec.environment,
            service: &spec.service,
            version: &spec.version,
            env_names: &env_names,
        };
        let deployments: Api<Deployment> = self.api(&spec.environment);
        let name = deployment_name(&spec.service.name, &spec.version);
        // Two versions whose slugs coincide (`1.2.0-rc.1`, `1.2.0-rc-1`) would share a name;
        // applying would silently replace the other one.
        if let Some(existing) = deployments.get_opt(&name).await? {
            let running = version_of(&existing);
            if running != spec.version {
                return Err(KubeError::Refused(format!(
                    "Deployment {name} runs version {running}, whose name slug equals {}'s",
                    spec.version
                )));
            }
        }
        let secret = manifests::env_secret(&self.settings, &w, &spec.env);
        let secrets: Api<Secret> = self.api(&spec.environment);
        secrets
            .patch(
                &env_secret_name(&spec.service.name, &spec.version),
                &self.apply_params(),
                &Patch::Apply(&secret),
            )
            .await?;
        let deployment = manifests::deployment(&self.settings, &w, spec.service.replicas);
        deployments
            .patch(&name, &self.apply_params(), &Patch::Apply(&deployment))
            .await?;
        Ok(())
    }

    async fn wait_deployment(
        &self,
        environment: &str,
        service: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let deployments: Api<Deployment> = self.api(environment);
        let name = deployment_name(service, version);
        let deadline = Instant::now() + timeout;
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(1));
        loop {
            let last = match deployments.get_opt(&name).await {
                Ok(Some(d)) => match progress(&d) {
                    Progress::Ready => return Ok(()),
                    Progress::Failed(why) => {
                        let pods = self.pod_problems(environment, service, version).await;
                        return Err(TargetError::NotReady(format!(
                            "Deployment {name} failed: {why}{pods}"
                        )));
                    }
                    Progress::Waiting(why) => why,
                },
                Ok(None) => {
                    return Err(TargetError::NotReady(format!(
                        "Deployment {name} does not exist (the version was not started)"
                    )));
                }
                // An API server restarting or throttling is no reason to give up before the
                // timeout; a refusal (403, 404 of the namespace, ...) is.
                Err(e) if transient(&e) => format!("API error: {e}"),
                Err(e) => return Err(KubeError::from(e).into()),
            };
            let now = Instant::now();
            if now >= deadline {
                let pods = self.pod_problems(environment, service, version).await;
                return Err(TargetError::NotReady(format!(
                    "Deployment {name} not ready after {} s: {last}{pods}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// Why the version's pods are not running, for error messages (empty when nothing is known).
    async fn pod_problems(&self, environment: &str, service: &str, version: &str) -> String {
        let pods: Api<Pod> = self.api(environment);
        let labels = manifests::version_labels(&self.project, environment, service, version);
        let Ok(list) = pods
            .list(&ListParams::default().labels(&manifests::selector_string(&labels)))
            .await
        else {
            return String::new();
        };
        let mut problems = Vec::new();
        for pod in &list.items {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let Some(status) = &pod.status else { continue };
            let all = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for c in all {
                let Some(state) = &c.state else { continue };
                if let Some(w) = &state.waiting {
                    let reason = w.reason.clone().unwrap_or_default();
                    if reason != "PodInitializing" && reason != "ContainerCreating" {
                        problems.push(format!(
                            "{pod_name}/{}: {reason} {}",
                            c.name,
                            w.message.clone().unwrap_or_default()
                        ));
                    }
                } else if let Some(t) = &state.terminated
                    && t.exit_code != 0
                {
                    problems.push(format!(
                        "{pod_name}/{}: exited {} {}",
                        c.name,
                        t.exit_code,
                        t.reason.clone().unwrap_or_default()
                    ));
                }
            }
        }
        if problems.is_empty() {
            String::new()
        } else {
            format!("; pods: {}", problems.join("; ").trim_end())
        }
    }

    /// Sets a version's replicas through the scale subresource; a scale-up waits until the
    /// new pods are ready, so traffic never moves to pods that cannot take it.
    async fn scale(
        &self,
        environment: &str,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), TargetError> {
        let deployments: Api<Deployment> = self.api(environment);
        let name = deployment_name(service, version);
        let current = deployments
            .get_opt(&name)
            .await
            .map_err(KubeError::from)?
            .ok_or_else(|| {
                TargetError::Other(format!(
                    "Deployment {name} does not exist (the version was not started)"
                ))
            })?;
        let have = current
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(1);
        if have != replicas {
            let params = PatchParams {
                field_manager: Some(self.settings.field_manager.clone()),
                ..PatchParams::default()
            };
            deployments
                .patch_scale(
                    &name,
                    &params,
                    &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
                )
                .await
                .map_err(KubeError::from)?;
        }
        if replicas > have || !matches!(progress(&current), Progress::Ready) {
            let timeout = Duration::from_millis(self.settings.scale_timeout_ms);
            self.wait_deployment(environment, service, version, timeout)
                .await?;
        }
        Ok(())
    }

    async fn route_split(
        &self,
        environment: &str,
        service: &Service,
        split: &Split,
    ) -> Result<(), TargetError> {
        let selection = match &split.canary {
            None => {
                self.scale(environment, &service.name, &split.stable, service.replicas)
                    .await?;
                Selection::Version(&split.stable)
            }
            Some((canary, weight)) => {
                self.refuse_third_version(environment, &service.name, &split.stable, canary)
                    .await?;
                let (s, c) = manifests::canary_replicas(service.replicas, *weight);
                let stable_now = self
                    .replicas_of(environment, &service.name, &split.stable)
                    .await?;
                // Grow one side before shrinking the other: the pods never drop below the target.
                let order = if s >= stable_now {
                    [(&split.stable, s), (canary, c)]
                } else {
                    [(canary, c), (&split.stable, s)]
                };
                for (version, n) in order {
                    self.scale(environment, &service.name, version, n).await?;
                }
                Selection::AllVersions
            }
        };
        let object = manifests::service(
            &self.settings,
            &self.project,
            environment,
            service,
            selection,
        );
        let services: Api<KubeService> = self.api(environment);
        services
            .patch(
                &slug(&service.name),
                &self.apply_params(),
                &Patch::Apply(&object),
            )
            .await
            .map_err(KubeError::from)?;
        Ok(())
    }

    async fn replicas_of(
        &self,
        environment: &str,
        service: &str,
        version: &str,
    ) -> Result<u32, TargetError> {
        let deployments: Api<Deployment> = self.api(environment);
        let name = deployment_name(service, version);
        let d = deployments.get_opt(&name).await.map_err(KubeError::from)?;
        Ok(d.and_then(|d| d.spec)
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0))
    }

    /// A canary's Service selects every version of the service, so a third version with pods
    /// (say, a blue-green deployment's warm old version) would get traffic too.
    async fn refuse_third_version(
        &self,
        environment: &str,
        service: &str,
        stable: &str,
        canary: &str,
    ) -> Result<(), TargetError> {
        let deployments: Api<Deployment> = self.api(environment);
        let labels = manifests::service_labels(&self.project, environment, service);
        let list = deployments
            .list(&ListParams::default().labels(&manifests::selector_string(&labels)))
            .await
            .map_err(KubeError::from)?;
        let allowed = [slug(stable), slug(canary)];
        for d in &list.items {
            let version = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_VERSION))
                .cloned()
                .unwrap_or_default();
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if !allowed.contains(&version) && replicas > 0 {
                return Err(TargetError::Other(format!(
                    "version {} ({}) still runs {replicas} pods; a canary's Service would send it traffic: stop it first",
                    version_of(d),
                    d.metadata.name.clone().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Lists the service's pods in the environment (and keeps them for [`Target::status`]).
    pub async fn refresh_status(
        &self,
        environment: &str,
        service: &str,
    ) -> Result<Vec<ReplicaStatus>, KubeError> {
        let pods: Api<Pod> = self.api(environment);
        let labels = manifests::service_labels(&self.project, environment, service);
        let list = pods
            .list(&ListParams::default().labels(&manifests::selector_string(&labels)))
            .await?;
        let mut out: Vec<ReplicaStatus> = list
            .items
            .iter()
            .map(|p| replica_status(service, p))
            .collect();
        out.sort_by(|a, b| a.replica.cmp(&b.replica));
        if let Ok(mut cache) = self.statuses.lock() {
            cache.insert((environment.to_string(), service.to_string()), out.clone());
        }
        Ok(out)
    }

    async fn stop_version(
        &self,
        environment: &str,
        service: &str,
        version: &str,
    ) -> Result<(), KubeError> {
        let deployments: Api<Deployment> = self.api(environment);
        ignore_not_found(
            deployments
                .delete(
                    &deployment_name(service, version),
                    &DeleteParams::background(),
                )
                .await
                .map(|_| ()),
        )?;
        let secrets: Api<Secret> = self.api(environment);
        ignore_not_found(
            secrets
                .delete(
                    &env_secret_name(service, version),
                    &DeleteParams::background(),
                )
                .await
                .map(|_| ()),
        )?;
        Ok(())
    }
}

/// Errors worth retrying: server-side failures, throttling and broken connections.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        other => other,
    }
}

/// The exact version of a Deployment or pod (annotation), else its version label.
fn version_of<K: Resource>(o: &K) -> String {
    let meta = o.meta();
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_VERSION))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(LABEL_VERSION)))
        .cloned()
        .unwrap_or_default()
}

fn progress(d: &Deployment) -> Progress {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return Progress::Waiting(format!("0/{want} ready (no status yet)"));
    };
    let conditions: Vec<String> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} ({}: {})",
                c.type_,
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .collect();
    let failed = st.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = failed {
        return Progress::Failed(format!(
            "progress deadline exceeded: {}",
            c.message.clone().unwrap_or_default()
        ));
    }
    let observed = match (d.metadata.generation, st.observed_generation) {
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    if observed && ready >= want && updated >= want {
        return Progress::Ready;
    }
    let mut why = format!("{ready}/{want} ready, {updated}/{want} updated");
    if !observed {
        why.push_str(", spec change not yet observed");
    }
    if !conditions.is_empty() {
        why.push_str("; ");
        why.push_str(&conditions.join(", "));
    }
    Progress::Waiting(why)
}

fn replica_status(service: &str, pod: &Pod) -> ReplicaStatus {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let version = version_of(pod);
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_ref());
    let restarts: u32 = containers
        .iter()
        .flat_map(|cs| cs.iter())
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .sum();
    let crash_looping = containers.iter().flat_map(|cs| cs.iter()).any(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff")
    });
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let health = if pod.metadata.deletion_timestamp.is_some() {
        "stopping"
    } else {
        match phase {
            "Failed" => "failed",
            "Succeeded" => "stopped",
            "Running" if ready => "ready",
            "Running" if crash_looping => "restarting",
            "Running" => "unready",
            _ if crash_looping => "restarting",
            _ => "starting",
        }
    };
    ReplicaStatus {
        replica: format!("{service}/{version}/{name}"),
        version,
        health: health.to_string(),
        restarts,
        in_flight: 0,
        address: name,
        pid: None,
    }
}

impl Target for KubeTarget {
    fn start<'a>(&'a self, spec: &'a VersionSpec) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            self.start_version(spec)
                .await
                .map_err(|e| TargetError::Start(e.to_string()))
        }
        .boxed()
    }

    fn wait_ready<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            self.wait_deployment(environment, service, version, timeout)
                .await?;
            // Best effort: the status view only lags if the list fails.
            let _ = self.refresh_status(environment, service).await;
            Ok(())
        }
        .boxed()
    }

    fn route<'a>(
        &'a self,
        environment: &'a str,
        service: &'a Service,
        _route: &'a Route,
        split: &'a Split,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        // Host names and listen addresses belong to the cluster's Ingress or Gateway, which
        // points at the Service; Ouro does not manage those.
        async move {
            self.route_split(environment, service, split).await?;
            let _ = self.refresh_status(environment, &service.name).await;
            Ok(())
        }
        .boxed()
    }

    fn stats(&self, _environment: &str, _service: &str, _version: &str) -> TrafficStats {
        // Traffic does not pass through Ouro on Kubernetes: no numbers (see docs/kubernetes.md).
        TrafficStats {
            requests: 0,
            errors: 0,
            latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
        }
    }

    fn drain<'a>(
        &'a self,
        _environment: &'a str,
        _service: &'a str,
        _version: &'a str,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>> {
        async move {
            // Kubernetes removes the old pods from the Service's endpoints itself; this wait lets
            // that reach every node before `stop`, and deleted pods then get their grace period.
            let started = Instant::now();
            let wait = self.settings.drain_wait_ms.min(drain.timeout_ms);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(DrainReport {
                cut_requests: 0,
                closed_upgrades: 0,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            self.stop_version(environment, service, version).await?;
            let _ = self.refresh_status(environment, service).await;
            Ok(())
        }
        .boxed()
    }

    fn observe<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Vec<ReplicaStatus>> {
        async move {
            // The pods as they are now; the cached view when the API server does not answer.
            match self.refresh_status(environment, service).await {
                Ok(r) => r,
                Err(_) => self.status(environment, service),
            }
        }
        .boxed()
    }

    fn status(&self, environment: &str, service: &str) -> Vec<ReplicaStatus> {
        self.statuses
            .lock()
            .ok()
            .and_then(|c| {
                c.get(&(environment.to_string(), service.to_string()))
                    .cloned()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value, deleting: bool) -> Pod {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1-0-0-abc",
                "labels": { "ouro.dev/version": "1-0-0" },
                "annotations": { "ouro.dev/version": "1.0.0" },
            },
            "status": status,
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(p).expect("pod")
    }

    fn container(restarts: i32, waiting: Option<&str>) -> serde_json::Value {
        let state = match waiting {
            Some(r) => json!({ "waiting": { "reason": r } }),
            None => json!({ "running": {} }),
        };
        json!({ "name": "app", "image": "i", "imageID": "", "ready": false,
                "restartCount": restarts, "state": state })
    }

    #[test]
    fn pods_map_to_replica_health() {
        let ready = pod(
            json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }],
                    "containerStatuses": [container(2, None)] }),
            false,
        );
        let r = replica_status("web", &ready);
        assert_eq!((r.health.as_str(), r.restarts), ("ready", 2));
        assert_eq!(r.version, "1.0.0");
        assert_eq!(r.replica, "web/1.0.0/web-1-0-0-abc");
        let looping = pod(
            json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }],
                    "containerStatuses": [container(5, Some("CrashLoopBackOff"))] }),
            false,
        );
        assert_eq!(replica_status("web", &looping).health, "restarting");
        let pending = pod(json!({ "phase": "Pending" }), false);
        assert_eq!(replica_status("web", &pending).health, "starting");
        let unready = pod(json!({ "phase": "Running" }), false);
        assert_eq!(replica_status("web", &unready).health, "unready");
        let stopping = pod(json!({ "phase": "Running" }), true);
        assert_eq!(replica_status("web", &stopping).health, "stopping");
        assert_eq!(
            replica_status("web", &pod(json!({ "phase": "Failed" }), false)).health,
            "failed"
        );
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web-1-0-0", "generation": generation },
            "spec": { "replicas": 3, "selector": {}, "template": {} },
            "status": status,
        }))
        .expect("deployment")
    }

    #[test]
    fn readiness_needs_the_latest_generation_and_every_replica() {
        let ready = deployment(
            2,
            json!({ "observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3 }),
        );
        assert!(matches!(progress(&ready), Progress::Ready));
        // The status still describes the previous spec.
        let stale = deployment(
            3,
            json!({ "observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3 }),
        );
        assert!(matches!(progress(&stale), Progress::Waiting(w) if w.contains("not yet observed")));
        let partial = deployment(
            1,
            json!({ "observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 3,
                    "conditions": [{ "type": "Available", "status": "False",
                                     "reason": "MinimumReplicasUnavailable" }] }),
        );
        assert!(matches!(progress(&partial), Progress::Waiting(w)
            if w.contains("1/3 ready") && w.contains("Available=False")));
        let failed = deployment(
            1,
            json!({ "observedGeneration": 1, "conditions": [{ "type": "Progressing",
                    "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"web-1-0-0-abc\" has timed out progressing." }] }),
        );
        assert!(matches!(progress(&failed), Progress::Failed(w) if w.contains("timed out")));
    }
}
