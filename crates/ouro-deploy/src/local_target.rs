//! The local target (the embedded default): versions run as supervised processes
//! ([`crate::local::Supervisor`]) behind the built-in proxy ([`crate::proxy::Proxy`]). A
//! route's traffic switch is one table swap in the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::target::split_key;
use futures::future::BoxFuture;

use crate::local::Supervisor;
use crate::proxy::Proxy;
use crate::spec::{Drain, Route, Service, Strategy};
use crate::target::{
    DrainReport, Members, ReplicaStatus, Split, Target, TargetError, TrafficStats, VersionSpec,
};

/// (environment key, service) → the bound proxy address and the route's host.
type Bound = HashMap<(String, String), (SocketAddr, Option<String>)>;

pub struct LocalTarget {
    supervisor: Arc<Supervisor>,
    proxy: Proxy,
    /// Where routes without `listen` go (`[deploy] listen`).
    default_listen: String,
    /// The address each (environment key, service) route is bound to: a `listen` with port 0
    /// binds once and keeps that port for later switches.
    bound: Mutex<Bound>,
}

/// The name the proxy's numbers and metrics carry for a service: unique per project and
/// environment (two environments may run the same version of a service side by side).
pub fn qualified(key: &str, service: &str) -> String {
    format!("{key}/{service}")
}

impl LocalTarget {
    pub fn new(supervisor: Arc<Supervisor>, proxy: Proxy, default_listen: String) -> LocalTarget {
        LocalTarget {
            supervisor,
            proxy,
            default_listen,
            bound: Mutex::new(HashMap::new()),
        }
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    fn upstreams(
        &self,
        key: &str,
        service: &str,
        version: &str,
    ) -> Vec<Arc<crate::upstream::Upstream>> {
        let (project, env) = split_key(key);
        self.supervisor.upstreams(project, env, service, version)
    }

    /// The replica ids (`service/version/N`) the service's route sends traffic to now.
    pub fn routed(&self, environment: &str, service: &str) -> Vec<String> {
        let bound = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(environment.to_string(), service.to_string()))
            .cloned();
        let Some((addr, host)) = bound else {
            return Vec::new();
        };
        let prefix = format!("{environment}/");
        self.proxy
            .routed(addr, host.as_deref())
            .iter()
            .map(|u| {
                // The proxy's ids carry project and environment; status ids do not.
                u.replica
                    .strip_prefix(&prefix)
                    .unwrap_or(&u.replica)
                    .to_string()
            })
            .collect()
    }

    /// The bound proxy address of a route, binding it on first use.
    async fn bind(
        &self,
        environment: &str,
        service: &Service,
        route: &Route,
    ) -> Result<SocketAddr, TargetError> {
        let key = (environment.to_string(), service.name.clone());
        let known = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let addr = match known {
            Some((addr, _)) => addr,
            None => {
                let listen = route.listen.as_deref().unwrap_or(&self.default_listen);
                self.proxy.listen(listen).await.map_err(|e| {
                    TargetError::Other(format!(
                        "the proxy cannot listen on {listen}: {e}; choose another `listen` in the route or free the port"
                    ))
                })?
            }
        };
        self.refuse_taken(&key, addr, route.host.as_deref())?;
        Ok(addr)
    }

    /// Another environment's service already has this address and host: taking it over would
    /// send that environment's traffic here (and removing it later would cut both).
    fn refuse_taken(
        &self,
        key: &(String, String),
        addr: SocketAddr,
        host: Option<&str>,
    ) -> Result<(), TargetError> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let taken = bound
            .iter()
            .find(|(k, (a, h))| *k != key && *a == addr && h.as_deref() == host);
        match taken {
            Some(((env, svc), _)) => Err(TargetError::Other(format!(
                "{addr}{} is already routed to service {svc} of {env}; give this route its own `host` or `listen`{}",
                host.map(|h| format!(" host {h}")).unwrap_or_default(),
                if env.contains("/review-") {
                    " (review hosts of several repositories: put `{repo}` in the host)"
                } else {
                    ""
                }
            ))),
            None => Ok(()),
        }
    }
}

impl Target for LocalTarget {
    fn start<'a>(&'a self, spec: &'a VersionSpec) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move { self.supervisor.start_version(spec).await.map(|_| ()) })
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
            self.supervisor
                .wait_ready(project, env, service, version, timeout)
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
            let key = (environment.to_string(), service.name.clone());
            let addr = self.bind(environment, service, route).await?;
            let stable = self.upstreams(environment, &service.name, &split.stable);
            let canary = split
                .canary
                .as_ref()
                .map(|(v, w)| (self.upstreams(environment, &service.name, v), *w));
            let sticky = match &service.strategy {
                Strategy::Canary(c) => c.sticky.clone(),
                _ => None,
            };
            let mut table = self
                .proxy
                .route_table(&qualified(environment, &service.name), stable);
            table.canary = canary;
            table.sticky = sticky;
            self.proxy.set_route(addr, route.host.as_deref(), table);
            self.bound
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (addr, route.host.clone()));
            Ok(())
        })
    }

    fn stats(&self, environment: &str, service: &str, version: &str) -> TrafficStats {
        self.proxy.stats(&qualified(environment, service), version)
    }

    fn drain<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>> {
        Box::pin(async move {
            let ups = self.upstreams(environment, service, version);
            Ok(self.proxy.drain(&ups, drain).await)
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
            self.supervisor
                .stop_version(project, env, service, version)
                .await
        })
    }

    fn status(&self, environment: &str, service: &str) -> Vec<ReplicaStatus> {
        let (project, env) = split_key(environment);
        self.supervisor.status(project, env, service)
    }

    fn unroute(&self, environment: &str, service: &str) {
        let removed = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(environment.to_string(), service.to_string()));
        if let Some((addr, host)) = removed {
            self.proxy.remove_route(addr, host.as_deref());
        }
    }

    fn replica_batches(&self) -> bool {
        true
    }

    fn scale<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.supervisor
                .scale_version(project, env, service, version, replicas)
                .await
        })
    }

    fn route_members<'a>(
        &'a self,
        environment: &'a str,
        service: &'a Service,
        route: &'a Route,
        members: &'a [Members],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            // Only replicas ready now: a rolling update counts on every routed replica serving.
            let ups: Vec<Arc<crate::upstream::Upstream>> = members
                .iter()
                .flat_map(|m| {
                    self.supervisor.upstreams_in(
                        project,
                        env,
                        &service.name,
                        &m.version,
                        0..m.replicas,
                    )
                })
                .filter(|u| u.is_ready())
                .collect();
            if ups.is_empty() {
                return Err(TargetError::NotReady(format!(
                    "{} has no ready replica among {}",
                    service.name,
                    members
                        .iter()
                        .map(|m| format!("{} x{}", m.version, m.replicas))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let addr = self.bind(environment, service, route).await?;
            let table = self
                .proxy
                .route_table(&qualified(environment, &service.name), ups);
            self.proxy.set_route(addr, route.host.as_deref(), table);
            self.bound.lock().unwrap_or_else(|e| e.into_inner()).insert(
                (environment.to_string(), service.name.clone()),
                (addr, route.host.clone()),
            );
            Ok(())
        })
    }

    fn drain_replicas<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        from: u32,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            let ups = self
                .supervisor
                .upstreams_in(project, env, service, version, from..u32::MAX);
            Ok(self.proxy.drain(&ups, drain).await)
        })
    }

    fn prune<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        keep: usize,
        protected: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, TargetError>> {
        Box::pin(async move {
            let (project, env) = split_key(environment);
            self.supervisor
                .prune(project, env, service, keep, protected)
                .await
        })
    }

    fn endpoint(&self, environment: &str, service: &str) -> Option<String> {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(environment.to_string(), service.to_string()))
            .map(|(a, _)| a.to_string())
    }
}
