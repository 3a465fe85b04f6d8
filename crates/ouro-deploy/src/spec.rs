//! The service model: what `.ouro/services.yml` declares, after parsing and checking
//! ([`crate::services::parse`] builds it). Durations are milliseconds, sizes bytes.
//!
//! Every other part of Deploy (the local target, the proxy, the strategies, the Kubernetes
//! target) reads these types; only the parser knows the YAML spelling.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A parsed `.ouro/services.yml`: services by name (lowercase letters, digits, `-`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServicesFile {
    pub services: BTreeMap<String, Service>,
    /// Per-environment changes by service name, then environment name
    /// (`services.<name>.environments.<env>`); applied by [`ServicesFile::for_environment`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, BTreeMap<String, Override>>,
}

/// What one environment changes in a service: production may run more replicas, shift traffic
/// by canary where staging switches blue-green, or set other variables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Override {
    pub replicas: Option<u32>,
    pub strategy: Option<Strategy>,
    pub resources: Option<Resources>,
    /// Added to the service's `env` (a name in both takes this value).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl ServicesFile {
    /// The services as they run in `environment`: each service with its override for that
    /// environment applied (a review environment `review-REPO-N` uses the `review` override).
    /// The result has no overrides left.
    pub fn for_environment(&self, environment: &str) -> ServicesFile {
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                let mut s = s.clone();
                let o = self.overrides.get(name).and_then(|m| {
                    m.get(environment)
                        .or_else(|| review_parts(environment).and_then(|_| m.get("review")))
                });
                if let Some(o) = o {
                    if let Some(n) = o.replicas {
                        s.replicas = n;
                    }
                    if let Some(st) = &o.strategy {
                        s.strategy = st.clone();
                    }
                    if let Some(r) = &o.resources {
                        s.resources = r.clone();
                    }
                    s.env
                        .extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                (name.clone(), s)
            })
            .collect();
        ServicesFile {
            services,
            overrides: BTreeMap::new(),
        }
    }
}

/// One service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    pub name: String,
    /// Shell command (`sh -c`) started in the unpacked release bundle's directory.
    pub run: String,
    pub port: Port,
    /// Replicas per version (1..=64).
    pub replicas: u32,
    pub health: Health,
    pub stop: Stop,
    /// Routes per environment name. The key `review` holds the route of review environments,
    /// where `{cr}` in a host name is replaced by the change request's number and `{repo}` by
    /// its repository's name.
    pub routes: BTreeMap<String, Route>,
    pub strategy: Strategy,
    /// How long an old version's in-flight requests may finish after traffic left it, and how
    /// long upgraded (WebSocket) connections get before they are closed.
    pub drain: Drain,
    pub resources: Resources,
    /// Environment variables for every replica (Ouro also sets `PORT`, `OURO_SERVICE`,
    /// `OURO_VERSION`, `OURO_ENVIRONMENT`, `OURO_REPLICA`).
    pub env: BTreeMap<String, String>,
}

/// Where a replica listens. Ouro always sets `PORT` for the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Port {
    /// Ouro picks a free loopback port per replica (the default).
    Auto,
    /// Replica slots get consecutive ports from this one (two versions run side by side during
    /// blue-green and canary, so up to `2 × replicas` ports are used).
    From(u16),
}

/// Health probes with Kubernetes semantics: readiness only takes a replica out of traffic,
/// liveness restarts it, and neither counts during the start period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Probe {
    pub check: ProbeCheck,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes to count as healthy (after a failure).
    pub success_threshold: u32,
    /// Consecutive failures to count as unhealthy.
    pub failure_threshold: u32,
    /// Failures do not count for this long after the replica started.
    pub start_period_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeCheck {
    /// `GET path` on the replica's port; 200..=399 is a success.
    Http { path: String },
    /// A TCP connection to the replica's port.
    Tcp,
    /// A shell command in the replica's directory with its environment; exit 0 is a success.
    Command { run: String },
}

/// How a replica is stopped: `signal` to its process group, then SIGKILL after `grace_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stop {
    /// Signal name without `SIG`: `TERM`, `INT`, `QUIT`, `HUP`, `USR1`, `USR2`, `KILL`.
    pub signal: String,
    pub grace_ms: u64,
}

impl Stop {
    /// The signal number (TERM for an unknown name; the parser refuses those).
    pub fn signal_number(&self) -> i32 {
        match self.signal.as_str() {
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "HUP" => libc::SIGHUP,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "KILL" => libc::SIGKILL,
            _ => libc::SIGTERM,
        }
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            signal: "TERM".into(),
            grace_ms: 10_000,
        }
    }
}

/// Where an environment's traffic for the service arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    /// `HOST:PORT` the proxy listens on (default: the server's `[deploy] listen`).
    pub listen: Option<String>,
    /// Only requests with this `Host` (no port) go to the service; none: every host.
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Strategy {
    /// Stop the old version, then start the new one (a short outage).
    Recreate,
    /// Replace replicas a few at a time.
    Rolling {
        max_surge: u32,
        max_unavailable: u32,
    },
    /// Start the new version beside the old, switch all traffic at once, keep the old warm.
    BlueGreen { keep_warm_ms: u64 },
    /// Shift traffic in steps, each gated by the new version's error rate and latency.
    Canary(Canary),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Canary {
    /// Percent of traffic per step, rising, the last one 100.
    pub steps: Vec<CanaryStep>,
    /// Which requests stay on one side: a hash of this cookie or header (none: the client address).
    pub sticky: Option<Sticky>,
    pub analysis: Analysis,
    /// After the last step, the old version is kept warm this long (as blue-green).
    pub keep_warm_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CanaryStep {
    pub weight: u8,
    pub pause_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    Cookie(String),
    Header(String),
}

/// The checks of a canary step, on the proxy's numbers for the step's pause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Analysis {
    /// Largest allowed share of 5xx responses and failed upstream requests (0.0..=1.0).
    pub max_error_rate: f64,
    /// Largest allowed p99 latency of the new version.
    pub max_p99_ms: u64,
    /// The new version's error rate may exceed the old one's by at most this much.
    pub max_error_rate_increase: f64,
    /// Below this many requests in a step the numbers are not judged (the step passes).
    pub min_requests: u64,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            max_error_rate: 0.01,
            max_p99_ms: 1000,
            max_error_rate_increase: 0.01,
            min_requests: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Drain {
    pub timeout_ms: u64,
    pub upgrade_grace_ms: u64,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            timeout_ms: 30_000,
            upgrade_grace_ms: 5_000,
        }
    }
}

/// Limits per replica process (rlimits: cgroups are not available on every host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// Address space (`RLIMIT_AS`).
    pub memory_bytes: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes of the user (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
}

impl Service {
    /// The route of an environment; a review environment `review-REPO-N` uses the `review`
    /// route with `{cr}` (N) and `{repo}` ([`host_label`] of REPO) replaced.
    pub fn route_for(&self, environment: &str) -> Option<Route> {
        if let Some(r) = self.routes.get(environment) {
            return Some(r.clone());
        }
        let (repo, cr) = review_parts(environment)?;
        let r = self.routes.get("review")?;
        Some(Route {
            listen: r.listen.clone(),
            host: r
                .host
                .as_ref()
                .map(|h| h.replace("{cr}", cr).replace("{repo}", &host_label(repo))),
        })
    }
}

/// The repository and change request number of a review environment: `review-REPO-N`, or
/// `review-N` as named before the repository was part of the name (no repository).
pub fn review_parts(environment: &str) -> Option<(&str, &str)> {
    let rest = environment.strip_prefix("review-")?;
    let (repo, cr) = rest.rsplit_once('-').unwrap_or(("", rest));
    (!cr.is_empty() && cr.bytes().all(|b| b.is_ascii_digit())).then_some((repo, cr))
}

/// A repository name as one DNS label for `{repo}` in a review host: lower case, and `.`
/// and `_` (allowed in repository names, not in host labels) as `-`.
pub fn host_label(repo: &str) -> String {
    repo.chars()
        .map(|c| match c {
            '.' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}
