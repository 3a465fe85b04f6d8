//! Where versions run. The strategies (`recreate`, `rolling`, `blue-green`, `canary`) are
//! written once against [`Target`]; the local target (supervised processes behind the built-in
//! proxy) and the Kubernetes target (Deployments per version behind a Service) implement it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::spec::{Drain, Route, Service};

/// What to run: one version of one service in one environment.
#[derive(Clone, Debug)]
pub struct VersionSpec {
    /// The project's slug.
    pub project: String,
    /// The environment's name (`staging`).
    pub environment: String,
    pub service: Service,
    pub version: String,
    /// The verified release bundle (`tar.zst`) whose files the service runs from.
    pub bundle: PathBuf,
    /// The environment's variables and secrets (on top of the service's `env`).
    pub env: BTreeMap<String, String>,
}

impl VersionSpec {
    /// The key a [`Target`] knows the environment by: `PROJECT/ENVIRONMENT` (two projects may
    /// both have a `staging`). Every `environment` parameter of [`Target`] is such a key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.project, self.environment)
    }
}

/// An environment key `PROJECT/ENVIRONMENT` ([`VersionSpec::key`]) split into its parts.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Which version gets the traffic: all to `stable`, or `weight` percent to `canary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Split {
    pub stable: String,
    pub canary: Option<(String, u8)>,
}

impl Split {
    pub fn all(version: &str) -> Self {
        Split {
            stable: version.to_string(),
            canary: None,
        }
    }
}

/// Part of a route across versions: replicas `0..replicas` of `version` (a rolling update
/// routes to the ready replicas of both versions at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Members {
    pub version: String,
    pub replicas: u32,
}

/// Upper bounds (milliseconds) of the latency histogram buckets every target reports.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Cumulative traffic numbers of one version (since the target started counting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficStats {
    pub requests: u64,
    /// 5xx responses and requests that failed at the upstream (no response).
    pub errors: u64,
    /// Counts per bucket of [`LATENCY_BUCKETS_MS`], plus one for slower requests.
    pub latency_buckets: Vec<u64>,
}

/// The numbers of a time slice (the difference of two [`TrafficStats`]).
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Upper bound of the bucket holding the 99th percentile (none without requests).
    pub p99_ms: Option<f64>,
}

impl TrafficStats {
    pub fn since(&self, earlier: &TrafficStats) -> Window {
        let requests = self.requests.saturating_sub(earlier.requests);
        let errors = self.errors.saturating_sub(earlier.errors);
        let buckets: Vec<u64> = (0..self.latency_buckets.len())
            .map(|i| {
                self.latency_buckets[i]
                    .saturating_sub(earlier.latency_buckets.get(i).copied().unwrap_or(0))
            })
            .collect();
        let total: u64 = buckets.iter().sum();
        let p99_ms = if total == 0 {
            None
        } else {
            // The smallest bucket bound under which at least 99% of the requests finished.
            let want = (total * 99).div_ceil(100);
            let mut seen = 0;
            let mut bound = f64::INFINITY;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= want {
                    bound = LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
                    break;
                }
            }
            Some(bound)
        };
        Window {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms,
        }
    }
}

/// One replica as a target reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaStatus {
    /// `service/version/N`.
    pub replica: String,
    pub version: String,
    /// `starting`, `ready`, `unready`, `restarting`, `failed`, `stopping`, `stopped`.
    pub health: String,
    pub restarts: u32,
    /// Requests in flight through the proxy.
    pub in_flight: u64,
    /// Address the replica listens on (`127.0.0.1:PORT`; the pod's name on Kubernetes).
    pub address: String,
    pub pid: Option<u32>,
}

/// How a drain ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Requests still in flight at the deadline (0 when the drain finished in time).
    pub cut_requests: u64,
    /// Upgraded connections closed after the grace period.
    pub closed_upgrades: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A replica did not become ready (message says which and why: probe output, exit status).
    #[error("{0}")]
    NotReady(String),
    /// The bundle or the service could not be started.
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Other(String),
}

/// A place versions run. Every method is idempotent: starting a running version or stopping a
/// stopped one does nothing, so an interrupted deployment can be driven again from its record.
pub trait Target: Send + Sync {
    /// Starts the version's replicas (returns once they are started, not ready).
    fn start<'a>(&'a self, spec: &'a VersionSpec) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Waits until every replica of the version is ready; fails at `timeout` or when a replica
    /// has failed for good (its start limit).
    fn wait_ready<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Sends the service's traffic in `environment` as `split` says, atomically.
    fn route<'a>(
        &'a self,
        environment: &'a str,
        service: &'a Service,
        route: &'a Route,
        split: &'a Split,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Cumulative traffic numbers of a version.
    fn stats(&self, environment: &str, service: &str, version: &str) -> TrafficStats;

    /// Waits until a version that no longer gets traffic has nothing in flight (or the drain
    /// deadline), then closes its upgraded connections after the grace period.
    fn drain<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>>;

    /// Stops every replica of a version (signal, grace, kill).
    fn stop<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// The replicas of a service in an environment, every version.
    fn status(&self, environment: &str, service: &str) -> Vec<ReplicaStatus>;

    /// Where the service's traffic arrives (the proxy's bound `HOST:PORT`; a Service name on
    /// Kubernetes), once routed.
    fn endpoint(&self, _environment: &str, _service: &str) -> Option<String> {
        None
    }

    /// Removes the service's route in the environment (a review environment torn down).
    fn unroute(&self, _environment: &str, _service: &str) {}

    /// [`status`](Target::status) as it is now: a target that caches its replicas' state (the
    /// Kubernetes one reads pods) asks its backend again. Canary steps judge the new version's
    /// replicas with it.
    fn observe<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Vec<ReplicaStatus>> {
        Box::pin(async move { self.status(environment, service) })
    }

    /// Whether the target runs a rolling update in batches ([`Target::scale`],
    /// [`Target::route_members`], [`Target::drain_replicas`]). Targets that say no get the
    /// version-level rolling update: all new replicas start, then traffic shifts by weight.
    fn replica_batches(&self) -> bool {
        false
    }

    /// Runs exactly `replicas` replicas of a version that was started before (its spec is
    /// known to the target): starts missing ones, stops those with an index of `replicas` or
    /// more. The default only knows 0 (stop).
    fn scale<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            if replicas == 0 {
                self.stop(environment, service, version).await
            } else {
                Err(TargetError::Other(format!(
                    "this target cannot scale {service} {version} to {replicas} replicas"
                )))
            }
        })
    }

    /// Sends the service's traffic to the ready replicas among `members` (several versions at
    /// once), atomically, each replica an equal share. The default maps the first two members
    /// onto a weighted [`Split`] by their replica counts.
    fn route_members<'a>(
        &'a self,
        environment: &'a str,
        service: &'a Service,
        route: &'a Route,
        members: &'a [Members],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let live: Vec<&Members> = members.iter().filter(|m| m.replicas > 0).collect();
            let split = match live.as_slice() {
                [] => {
                    return Err(TargetError::Other(
                        "a route needs at least one replica".into(),
                    ));
                }
                [one] => Split::all(&one.version),
                [a, b, ..] => {
                    let total = u64::from(a.replicas) + u64::from(b.replicas);
                    let weight = (u64::from(b.replicas) * 100 / total).clamp(1, 99) as u8;
                    Split {
                        stable: a.version.clone(),
                        canary: Some((b.version.clone(), weight)),
                    }
                }
            };
            self.route(environment, service, route, &split).await
        })
    }

    /// Drains the replicas of a version with an index of `from` or more (taken out of the
    /// route before). The default drains the whole version when `from` is 0, else nothing.
    fn drain_replicas<'a>(
        &'a self,
        environment: &'a str,
        service: &'a str,
        version: &'a str,
        from: u32,
        drain: &'a Drain,
    ) -> BoxFuture<'a, Result<DrainReport, TargetError>> {
        Box::pin(async move {
            if from == 0 {
                self.drain(environment, service, version, drain).await
            } else {
                Ok(DrainReport {
                    cut_requests: 0,
                    closed_upgrades: 0,
                    elapsed_ms: 0,
                })
            }
        })
    }

    /// Removes what old versions of a service left on the target (unpacked files), keeping the
    /// newest `keep` and every version in `protected`; never a version with a running replica.
    /// Returns the versions removed. The default has nothing to remove.
    fn prune<'a>(
        &'a self,
        _environment: &'a str,
        _service: &'a str,
        _keep: usize,
        _protected: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, TargetError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
