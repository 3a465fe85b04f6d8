//! Every project of the server on one cluster: the deployment engine names environments by
//! their key `PROJECT/ENVIRONMENT` (see `ouro_deploy::target::VersionSpec::key`); this target
//! keeps one [`KubeTarget`] per project (its own namespaces and labels) and forwards each call
//! with the plain environment name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::Client;
use ouro_deploy::spec::{Drain, Route, Service};
use ouro_deploy::target::split_key;
use ouro_deploy::target::{
    DrainReport, ReplicaStatus, Split, Target, TargetError, TrafficStats, VersionSpec,
};

use crate::{KubeError, KubeSettings, KubeTarget};

pub struct KubeTargets {
    client: Client,
    settings: KubeSettings,
    targets: Mutex<BTreeMap<String, Arc<KubeTarget>>>,
}

impl KubeTargets {
    pub fn new(client: Client, settings: KubeSettings) -> Result<KubeTargets, KubeError> {
        settings.check()?;
        Ok(KubeTargets {
            client,
            settings,
            targets: Mutex::new(BTreeMap::new()),
        })
    }

    /// The target of one project (made on first use).
    pub fn project(&self, project: &str) -> Result<Arc<KubeTarget>, TargetError> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = targets.get(project) {
            return Ok(t.clone());
        }
        let t = Arc::new(KubeTarget::new(
            self.client.clone(),
            self.settings.clone(),
            project,
        )?);
        targets.insert(project.to_string(), t.clone());
        Ok(t)
    }
}

impl Target for KubeTargets {
    fn start<'a>(&'a self, spec: &'a VersionSpec) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move { self.project(&spec.project)?.start(spec).await })
    }

    fn wait_ready<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.project(project)?
                .wait_ready(env, service, version, timeout)
                .await
        })
    }

    fn route<'a>(
        &'a self,
        environment: &'a str,
        service: &'a Service,
        route: &'a Route,
        split: &'a Split,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.project(project)?
                .route(env, service, route, split)
                .await
        })
    }

    fn stats(&self, environment: &str, service: &str, version: &str) -> TrafficStats {
        let (project, env) = split_key(environment);
        self.project(project)
            .map(|t| t.stats(env, service, version))
            .unwrap_or_default()
    }

    fn drain<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.project(project)?
                .drain(env, service, version, drain)
                .await
        })
    }

    fn stop<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.project(project)?.stop(env, service, version).await
        })
    }

    fn status(&self, environment: &str, service: &str) -> Vec<ReplicaStatus> {
        let (project, env) = split_key(environment);
        self.project(project)
            .map(|t| t.status(env, service))
            .unwrap_or_default()
    }

    fn observe<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Vec<ReplicaStatus>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            match self.project(project) {
                Ok(t) => t.observe(env, service).await,
                Err(_) => Vec::new(),
            }
        })
    }
}
