//! The golden signals per service, version and replica: Prometheus families for `/metrics`, and
//! plain atomic counters per version for [`crate::target::TrafficStats`] (read by canary analysis
//! on every check, so they must be cheap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::target::{LATENCY_BUCKETS_MS, TrafficStats};
use crate::upstream::Upstream;

/// Status classes in the order of [`ReplicaSignals::requests`]; `error` is a request that got no
/// response from the replica (connection lost, timeout, a body cut short).
pub(crate) const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
pub(crate) const ERROR: usize = 5;

/// The index in [`CLASSES`] of a status code.
pub(crate) fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    service: String,
    version: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    service: String,
    version: String,
    replica: String,
    class: String,
}

type HistogramFamily = Family<ReplicaLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS.iter().map(|ms| ms / 1000.0))
}

/// Every metric of one proxy.
pub(crate) struct Families {
    requests: Family<ClassLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Family<ReplicaLabels, Gauge>,
    upgraded: Family<ReplicaLabels, Gauge>,
    connect_failures: Family<ReplicaLabels, Counter>,
    versions: Mutex<HashMap<(String, String), Arc<VersionCounters>>>,
}

impl Families {
    pub fn new() -> Families {
        Families {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Family::default(),
            upgraded: Family::default(),
            connect_failures: Family::default(),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// Registers the families under `proxy_` (the server's registry adds `ouro_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("proxy");
        r.register(
            "requests",
            "Requests through the proxy by service, version, replica and status class (error: no response)",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to the replica's response headers",
            self.latency.clone(),
        );
        r.register(
            "in_flight",
            "Requests in flight to a replica",
            self.in_flight.clone(),
        );
        r.register(
            "upgraded_connections",
            "Upgraded (WebSocket) connections open to a replica",
            self.upgraded.clone(),
        );
        r.register(
            "upstream_connect_failures",
            "Connections to a replica that failed (the request was tried on another replica)",
            self.connect_failures.clone(),
        );
    }

    /// The handles of one replica (its series exist from now on, at zero).
    pub fn replica(&self, upstream: &Upstream) -> Arc<ReplicaSignals> {
        let labels = ReplicaLabels {
            service: upstream.service.clone(),
            version: upstream.version.clone(),
            replica: upstream.replica.clone(),
        };
        let requests = CLASSES.map(|class| {
            self.requests.get_or_create_owned(&ClassLabels {
                service: labels.service.clone(),
                version: labels.version.clone(),
                replica: labels.replica.clone(),
                class: class.to_string(),
            })
        });
        let version = self.version(&upstream.service, &upstream.version);
        Arc::new(ReplicaSignals {
            requests,
            latency: self.latency.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            upgraded: self.upgraded.get_or_create_owned(&labels),
            connect_failures: self.connect_failures.get_or_create_owned(&labels),
            version,
        })
    }

    /// Drops the Prometheus series of a replica that is gone (the version's totals stay).
    pub fn forget(&self, upstream: &Upstream) {
        let labels = ReplicaLabels {
            service: upstream.service.clone(),
            version: upstream.version.clone(),
            replica: upstream.replica.clone(),
        };
        for class in CLASSES {
            self.requests.remove(&ClassLabels {
                service: labels.service.clone(),
                version: labels.version.clone(),
                replica: labels.replica.clone(),
                class: class.to_string(),
            });
        }
        self.latency.remove(&labels);
        self.in_flight.remove(&labels);
        self.upgraded.remove(&labels);
        self.connect_failures.remove(&labels);
    }

    fn version(&self, service: &str, version: &str) -> Arc<VersionCounters> {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        versions
            .entry((service.to_string(), version.to_string()))
            .or_insert_with(|| Arc::new(VersionCounters::new()))
            .clone()
    }

    pub fn stats(&self, service: &str, version: &str) -> TrafficStats {
        let counters = {
            let versions = self
                .versions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            versions
                .get(&(service.to_string(), version.to_string()))
                .cloned()
        };
        match counters {
            Some(c) => c.snapshot(),
            None => TrafficStats {
                requests: 0,
                errors: 0,
                latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            },
        }
    }
}

/// Cumulative numbers of one version.
pub(crate) struct VersionCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: Vec<AtomicU64>,
}

impl VersionCounters {
    fn new() -> VersionCounters {
        VersionCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..=LATENCY_BUCKETS_MS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn record(&self, error: bool, latency_ms: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        // Prometheus' `le`: a value equal to a bound belongs to that bucket.
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|bound| latency_ms <= *bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TrafficStats {
        TrafficStats {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The metric handles of one replica (clones share the families' values).
pub(crate) struct ReplicaSignals {
    requests: [Counter; 6],
    latency: Histogram,
    pub in_flight: Gauge,
    pub upgraded: Gauge,
    pub connect_failures: Counter,
    version: Arc<VersionCounters>,
}

impl ReplicaSignals {
    /// One finished request: its class (an index in [`CLASSES`]) and the seconds to its response
    /// headers.
    pub fn record(&self, class: usize, latency_s: f64) {
        self.requests[class.min(ERROR)].inc();
        self.latency.observe(latency_s);
        self.version.record(class >= 4, latency_s * 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_sums_its_replicas_and_buckets_by_upper_bound() {
        let f = Families::new();
        let a = f.replica(&Upstream::new("s", "v1", 0, ([127, 0, 0, 1], 1).into()));
        let b = f.replica(&Upstream::new("s", "v1", 1, ([127, 0, 0, 1], 2).into()));
        a.record(class_of(200), 0.0005);
        b.record(class_of(503), 0.003);
        b.record(ERROR, 20.0);
        let s = f.stats("s", "v1");
        assert_eq!((s.requests, s.errors), (3, 2));
        assert_eq!(s.latency_buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        assert_eq!(s.latency_buckets[0], 1); // 0.5 ms <= 1 ms
        assert_eq!(s.latency_buckets[2], 1); // 3 ms <= 5 ms
        assert_eq!(s.latency_buckets[LATENCY_BUCKETS_MS.len()], 1); // slower than every bound
        assert_eq!(f.stats("s", "v2").requests, 0);
    }
}
