//! Prometheus metrics with an explicit registry (no globals, so parallel tests do not mix).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub events_appended: Counter,
    pub db_connections: Gauge,
    pub db_idle: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Self::with(|_| {})
    }

    /// The metrics with more families registered by `extra` (the deploy proxy's golden signals).
    pub fn with(extra: impl FnOnce(&mut Registry)) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ouro");
        extra(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let events_appended = Counter::default();
        registry.register(
            "events_appended",
            "Events appended to the ledger by this process",
            events_appended.clone(),
        );
        let db_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Open database connections",
            db_connections.clone(),
        );
        let db_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            db_idle.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            webhook_deliveries.clone(),
        );
        // Both series exist from the start, so a dashboard shows 0 rather than "no data".
        for outcome in ["success", "failure"] {
            let _ = webhook_deliveries.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        let consumer_lag = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "event_consumer_lag",
            "Committed events an in-process consumer (automation, notifications, webhooks, ...) has not handled yet",
            consumer_lag.clone(),
        );
        Arc::new(Metrics {
            registry,
            consumer_lag,
            requests,
            latency,
            events_appended,
            db_connections,
            db_idle,
            webhook_deliveries,
        })
    }

    pub fn webhook_attempt(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// Counts and times every request by its route pattern (never the raw path: bounded cardinality).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: res.status().as_u16(),
        })
        .inc();
    res
}

/// Renders the registry in the Prometheus text format, refreshing the sampled values first.
pub fn render(state: &AppState) -> String {
    let m = &state.metrics;
    let stats = state.store.pool_stats();
    m.db_connections.set(stats.size as i64);
    m.db_idle.set(stats.idle as i64);
    for (name, lag) in state.store.consumer_lag() {
        m.consumer_lag
            .get_or_create(&ConsumerLabels {
                consumer: name.to_string(),
            })
            .set(lag);
    }
    let appended = state.store.events_appended();
    let cur = m.events_appended.get();
    if appended > cur {
        m.events_appended.inc_by(appended - cur);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    out
}
