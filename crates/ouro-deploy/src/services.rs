//! `.ouro/services.yml`: the services a release runs, parsed with positions through Build's YAML
//! node tree so that every problem is reported at once as
//! `FILE:LINE:COL: error[deploy.svc_*]: message` (the same contract as pipeline files).
//!
//! ```yaml
//! services:
//!   web:
//!     run: ./bin/web --port "$PORT"
//!     replicas: 2
//!     health:
//!       readiness: {http: /healthz}
//!     route:
//!       staging: {listen: "127.0.0.1:8081"}
//!     strategy: blue-green
//! ```
//!
//! The full reference is docs/services.md; [`parse`] builds [`crate::spec::ServicesFile`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ouro_build::Diagnostic;
use ouro_build::diag::did_you_mean;
use ouro_build::yaml::{self, Node, V};

use crate::spec::{
    Analysis, Canary, CanaryStep, Drain, Health, Override, Port, Probe, ProbeCheck, Resources,
    Route, Service, ServicesFile, Sticky, Stop, Strategy,
};

/// Where the services are read from in a repository (at the release's commit).
pub const FILE: &str = ".ouro/services.yml";
/// At most this many bytes in the file.
pub const MAX_BYTES: usize = 64 * 1024;
/// At most this many services in the file.
pub const MAX_SERVICES: usize = 64;
/// Replicas per version: 1 to this.
pub const MAX_REPLICAS: u32 = 64;
/// At most this many canary steps.
pub const MAX_CANARY_STEPS: usize = 20;
/// Service names are at most this long, so that the Kubernetes target can add a version and
/// colour to them and stay inside a 63-character DNS label.
pub const MAX_SERVICE_NAME: usize = 40;
/// No duration may exceed 30 days.
pub const MAX_DURATION_MS: u64 = 30 * 86_400_000;
/// Blue-green (and canary after its last step) keep the old version warm this long by default.
pub const DEFAULT_KEEP_WARM_MS: u64 = 5 * 60_000;
/// The pause of a canary step written as a bare weight.
pub const DEFAULT_PAUSE_MS: u64 = 30_000;
/// The canary steps when `strategy: canary` names none.
pub const DEFAULT_CANARY_WEIGHTS: &[u8] = &[10, 25, 50, 100];
/// The signals `stop.signal` accepts (without `SIG`).
pub const SIGNALS: &[&str] = &["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"];
/// The strategy kinds.
pub const STRATEGIES: &[&str] = &["recreate", "rolling", "blue-green", "canary"];

pub const SVC_SYNTAX: &str = "deploy.svc_syntax";
pub const SVC_DUPLICATE_KEY: &str = "deploy.svc_duplicate_key";
pub const SVC_UNKNOWN_KEY: &str = "deploy.svc_unknown_key";
pub const SVC_INVALID_TYPE: &str = "deploy.svc_invalid_type";
pub const SVC_MISSING_KEY: &str = "deploy.svc_missing_key";
pub const SVC_INVALID_VALUE: &str = "deploy.svc_invalid_value";
pub const SVC_INVALID_NAME: &str = "deploy.svc_invalid_name";
pub const SVC_BAD_PROBE: &str = "deploy.svc_bad_probe";
pub const SVC_BAD_DURATION: &str = "deploy.svc_bad_duration";
pub const SVC_BAD_SIZE: &str = "deploy.svc_bad_size";
pub const SVC_BAD_PERCENT: &str = "deploy.svc_bad_percent";
pub const SVC_UNKNOWN_SIGNAL: &str = "deploy.svc_unknown_signal";
pub const SVC_UNKNOWN_STRATEGY: &str = "deploy.svc_unknown_strategy";
pub const SVC_BAD_STEPS: &str = "deploy.svc_bad_steps";
pub const SVC_BAD_ENV_VAR: &str = "deploy.svc_bad_env_var";
pub const SVC_BAD_ROUTE: &str = "deploy.svc_bad_route";
pub const SVC_ROUTE_CONFLICT: &str = "deploy.svc_route_conflict";
pub const SVC_EMPTY: &str = "deploy.svc_empty";

/// Every diagnostic code of the services file with what it means (docs/services.md).
pub const CODES: &[(&str, &str)] = &[
    (
        SVC_SYNTAX,
        "the file is not valid YAML or UTF-8, is too large or exceeds a parsing budget",
    ),
    (SVC_DUPLICATE_KEY, "a key appears twice in one mapping"),
    (
        SVC_UNKNOWN_KEY,
        "a key that is not allowed there (with a \"did you mean\" suggestion)",
    ),
    (
        SVC_INVALID_TYPE,
        "a value of the wrong type (a list where a mapping is expected, ...)",
    ),
    (
        SVC_MISSING_KEY,
        "a required key is missing (`run` of a service, `kind` of a strategy, ...)",
    ),
    (
        SVC_INVALID_VALUE,
        "a value out of range (`replicas: 0`, a port above 65535, more than 64 services, ...)",
    ),
    (
        SVC_INVALID_NAME,
        "a service or environment name with characters that are not allowed",
    ),
    (
        SVC_BAD_PROBE,
        "a health probe with no check or two checks, or an `http` path not starting with `/`",
    ),
    (
        SVC_BAD_DURATION,
        "a duration that is not like `500ms`, `10s`, `5m`, `1h30m`, or is out of range",
    ),
    (
        SVC_BAD_SIZE,
        "a size that is not like `512M`, `1G`, or a number of bytes",
    ),
    (
        SVC_BAD_PERCENT,
        "a percentage that is not like `1%`, `0.5%`",
    ),
    (
        SVC_UNKNOWN_SIGNAL,
        "a stop signal other than TERM, INT, QUIT, HUP, USR1, USR2, KILL",
    ),
    (
        SVC_UNKNOWN_STRATEGY,
        "a strategy other than `recreate`, `rolling`, `blue-green`, `canary`",
    ),
    (
        SVC_BAD_STEPS,
        "canary steps that are not strictly rising weights of 1 to 100 ending at 100",
    ),
    (
        SVC_BAD_ENV_VAR,
        "an `env` name that is not a valid variable name, or one Ouro sets itself",
    ),
    (
        SVC_BAD_ROUTE,
        "a `listen` that is not `HOST:PORT`, an invalid host, or `{cr}` outside the `review` route",
    ),
    (
        SVC_ROUTE_CONFLICT,
        "two services with the same `listen` and `host` in one environment",
    ),
    (SVC_EMPTY, "no `services` mapping, or an empty one"),
];

const SERVICE_KEYS: &[&str] = &[
    "run",
    "port",
    "replicas",
    "health",
    "stop",
    "route",
    "strategy",
    "drain",
    "resources",
    "env",
    "environments",
];
/// What `services.<name>.environments.<env>` may change.
const OVERRIDE_KEYS: &[&str] = &["replicas", "strategy", "resources", "env"];
const PROBE_KEYS: &[&str] = &[
    "http",
    "tcp",
    "command",
    "interval",
    "timeout",
    "success",
    "failure",
    "start-period",
];
const PROBE_KINDS: &[&str] = &["http", "tcp", "command"];

/// Parses a services file. `file` names it in diagnostics. Every problem is reported, sorted by
/// position.
pub fn parse(file: &str, text: &str) -> Result<ServicesFile, Vec<Diagnostic>> {
    if text.len() > MAX_BYTES {
        return Err(vec![
            Diagnostic::error(
                file,
                1,
                1,
                SVC_SYNTAX,
                format!("the file has {} bytes; at most {MAX_BYTES}", text.len()),
            )
            .with_help("keep scripts in the release bundle and start them with `run`"),
        ]);
    }
    let root =
        yaml::read(file, text).map_err(|ds| ds.into_iter().map(rename).collect::<Vec<_>>())?;
    let mut c = Checker {
        file,
        diags: Vec::new(),
    };
    let top = c.keys(&root, &["services"], "the file");
    let Some((_, services)) = top.into_iter().next() else {
        c.err(
            &root,
            SVC_EMPTY,
            "the file needs a `services` mapping".into(),
        )
        .help = Some("services:\n  web:\n    run: ./bin/web".into());
        return Err(c.diags);
    };
    let Some(map) = services.map().filter(|m| !m.is_empty()) else {
        let m = match services.map() {
            Some(_) => "`services` is empty".to_string(),
            None => format!("`services` must be a mapping, not {}", services.describe()),
        };
        c.err(services, SVC_EMPTY, m).help = Some("services:\n  web:\n    run: ./bin/web".into());
        return Err(c.diags);
    };
    if map.len() > MAX_SERVICES {
        c.err(
            services,
            SVC_INVALID_VALUE,
            format!("{} services; at most {MAX_SERVICES}", map.len()),
        );
    }
    let mut out = ServicesFile::default();
    let mut routes: Vec<RouteUse> = Vec::new();
    for (k, v) in map {
        let name = k.scalar_text().unwrap_or_default();
        let (service, overrides) = c.service(&name, k, v, &mut routes);
        if !overrides.is_empty() {
            out.overrides.insert(name.clone(), overrides);
        }
        out.services.insert(name, service);
    }
    c.route_conflicts(&routes);
    if c.diags.is_empty() {
        Ok(out)
    } else {
        c.diags.sort_by_key(|d| (d.line, d.col));
        Err(c.diags)
    }
}

/// Checks a file's bytes as `ouro lint` reads them: not UTF-8 is a diagnostic, not a failure.
/// Empty when the file is valid.
pub fn lint(file: &str, bytes: &[u8]) -> Vec<Diagnostic> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return vec![not_utf8(file, bytes, e.valid_up_to(), SVC_SYNTAX)],
    };
    match parse(file, text) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

/// A diagnostic for bytes that stop being UTF-8 at `valid_up_to`, at that line and column.
pub fn not_utf8(file: &str, bytes: &[u8], valid_up_to: usize, code: &'static str) -> Diagnostic {
    let good = &bytes[..valid_up_to.min(bytes.len())];
    let line = good.iter().filter(|b| **b == b'\n').count() as u32 + 1;
    let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&good[line_start..]).chars().count() as u32 + 1;
    let byte = bytes.get(valid_up_to).copied().unwrap_or(0);
    Diagnostic::error(
        file,
        line,
        col,
        code,
        format!("the file is not valid UTF-8 (byte 0x{byte:02x} at offset {valid_up_to})"),
    )
}

/// Build's YAML codes renamed into this file's namespace; its texts speak of pipeline files.
fn rename(mut d: Diagnostic) -> Diagnostic {
    d.code = match d.code {
        ouro_build::diag::DUPLICATE_KEY => SVC_DUPLICATE_KEY,
        _ => SVC_SYNTAX,
    };
    d.message = d.message.replace("a pipeline file", "the services file");
    d.help = d
        .help
        .map(|h| h.replace("pipeline files", "services files"));
    d
}

/// A route as used by a service, for the conflict check across services.
struct RouteUse {
    environment: String,
    listen: Option<String>,
    host: Option<String>,
    service: String,
    line: u32,
    col: u32,
    len: u32,
}

struct Checker<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, node: &Node, code: &'static str, message: String) -> &mut Diagnostic {
        self.diags.push(node.diag(self.file, code, message));
        self.diags.last_mut().expect("just pushed")
    }

    /// The entries of a mapping whose keys are allowed; unknown keys are reported. A null node
    /// is an empty mapping (`health:` with nothing under it).
    fn keys<'n>(
        &mut self,
        node: &'n Node,
        allowed: &[&str],
        what: &str,
    ) -> Vec<(String, &'n Node)> {
        let codes = (SVC_UNKNOWN_KEY, SVC_INVALID_TYPE);
        node.allowed_entries(self.file, allowed, what, codes, &mut self.diags)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.v {
            V::Str(s) if s.contains('\0') => {
                let m = format!("`{what}` contains a NUL character");
                self.err(node, SVC_INVALID_VALUE, m);
                None
            }
            V::Str(s) => Some(s.clone()),
            _ => {
                let m = format!("`{what}` must be a string, not {}", node.describe());
                self.err(node, SVC_INVALID_TYPE, m);
                None
            }
        }
    }

    fn int(&mut self, node: &Node, what: &str, min: u64, max: u64) -> Option<u64> {
        match node.v {
            V::Int(n) if n >= i128::from(min) && n <= i128::from(max) => u64::try_from(n).ok(),
            V::Int(_) => {
                let m = format!("`{what}` must be {min} to {max}");
                self.err(node, SVC_INVALID_VALUE, m);
                None
            }
            _ => {
                let m = format!("`{what}` must be an integer, not {}", node.describe());
                self.err(node, SVC_INVALID_TYPE, m);
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str, min_ms: u64) -> Option<u64> {
        let parsed = match &node.v {
            V::Int(0) => Some(0),
            V::Str(s) => parse_duration_ms(s),
            V::Seq(_) | V::Map(_) | V::Null => {
                let m = format!("`{what}` must be a duration, not {}", node.describe());
                self.err(node, SVC_INVALID_TYPE, m);
                return None;
            }
            _ => None,
        };
        let text = node.scalar_text().unwrap_or_default();
        let Some(ms) = parsed else {
            let d = self.err(
                node,
                SVC_BAD_DURATION,
                format!("`{what}`: invalid duration `{text}`"),
            );
            d.help =
                Some("a number and a unit (ms, s, m, h, d), e.g. `500ms`, `10s`, `1m30s`".into());
            return None;
        };
        if ms < min_ms || ms > MAX_DURATION_MS {
            let m = format!(
                "`{what}` must be {} to 30d, not `{text}`",
                format_ms(min_ms)
            );
            self.err(node, SVC_BAD_DURATION, m);
            return None;
        }
        Some(ms)
    }

    fn percent(&mut self, node: &Node, what: &str) -> Option<f64> {
        let text = node.scalar_text().unwrap_or_default();
        let value = node
            .as_str()
            .and_then(|s| s.trim().strip_suffix('%'))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| p.is_finite() && (0.0..=100.0).contains(p));
        if value.is_none() {
            let d = self.err(
                node,
                SVC_BAD_PERCENT,
                format!("`{what}`: invalid percentage `{text}`"),
            );
            d.help = Some("0% to 100% with the `%` sign, e.g. `1%` or `0.5%`".into());
        }
        value.map(|p| p / 100.0)
    }

    fn size(&mut self, node: &Node, what: &str, min: u64) -> Option<u64> {
        let text = node.scalar_text().unwrap_or_default();
        let bytes = match &node.v {
            V::Int(n) => u64::try_from(*n).ok(),
            V::Str(s) => parse_size(s),
            _ => None,
        };
        match bytes {
            Some(b) if b >= min => Some(b),
            Some(_) => {
                let m = format!(
                    "`{what}` must be at least {}, not `{text}`",
                    format_size(min)
                );
                self.err(node, SVC_BAD_SIZE, m);
                None
            }
            None => {
                let d = self.err(
                    node,
                    SVC_BAD_SIZE,
                    format!("`{what}`: invalid size `{text}`"),
                );
                d.help = Some(
                    "a number of bytes or a number with K, M, G or T (powers of 1024), e.g. `512M`"
                        .into(),
                );
                None
            }
        }
    }

    fn service(
        &mut self,
        name: &str,
        key: &Node,
        node: &Node,
        routes: &mut Vec<RouteUse>,
    ) -> (Service, BTreeMap<String, Override>) {
        let mut overrides = BTreeMap::new();
        let mut s = Service {
            name: name.to_string(),
            run: String::new(),
            port: Port::Auto,
            replicas: 1,
            health: Health::default(),
            stop: Stop::default(),
            routes: BTreeMap::new(),
            strategy: Strategy::BlueGreen {
                keep_warm_ms: DEFAULT_KEEP_WARM_MS,
            },
            drain: Drain::default(),
            resources: Resources::default(),
            env: BTreeMap::new(),
        };
        if !valid_service_name(name) {
            let d = self.err(
                key,
                SVC_INVALID_NAME,
                format!("invalid service name `{name}`"),
            );
            d.help = Some(format!(
                "lowercase letters, digits and `-`, starting with a letter, not ending with `-`, at most {MAX_SERVICE_NAME}"
            ));
        }
        let what = format!("service `{name}`");
        if !matches!(node.v, V::Map(_) | V::Null) {
            let m = format!("{what} must be a mapping, not {}", node.describe());
            self.err(node, SVC_INVALID_TYPE, m).help = Some(format!(
                "the command goes under `run`: `{name}: {{run: ...}}`"
            ));
            return (s, overrides);
        }
        let entries = self.keys(node, SERVICE_KEYS, &what);
        if !entries.iter().any(|(k, _)| k == "run") {
            let d = self.err(
                key,
                SVC_MISSING_KEY,
                format!("service `{name}` has no `run` command"),
            );
            d.help = Some("the command that starts it, e.g. `run: ./bin/web --port \"$PORT\"` (run with `sh -c` in the unpacked release bundle)".into());
        }
        let mut port_node = None;
        for (k, v) in entries {
            match k.as_str() {
                "run" => {
                    if let Some(run) = self.string(v, "run") {
                        if run.trim().is_empty() {
                            self.err(v, SVC_INVALID_VALUE, "`run` is empty".into());
                        }
                        s.run = run;
                    }
                }
                "port" => {
                    port_node = Some(v);
                    match &v.v {
                        V::Str(a) if a == "auto" => s.port = Port::Auto,
                        V::Int(_) => {
                            if let Some(p) = self.int(v, "port", 1, u64::from(u16::MAX)) {
                                s.port = Port::From(p as u16);
                            }
                        }
                        _ => {
                            let m = format!(
                                "`port` must be `auto` or a number, not {}",
                                describe_value(v)
                            );
                            self.err(v, SVC_INVALID_TYPE, m);
                        }
                    }
                }
                "replicas" => {
                    if let Some(n) = self.int(v, "replicas", 1, u64::from(MAX_REPLICAS)) {
                        s.replicas = n as u32;
                    }
                }
                "health" => s.health = self.health(v),
                "stop" => s.stop = self.stop(v),
                "route" => s.routes = self.routes(name, v, routes),
                "strategy" => s.strategy = self.strategy(v),
                "drain" => s.drain = self.drain(v),
                "resources" => s.resources = self.resources(v),
                "environments" => overrides = self.overrides(name, v),
                _ => s.env = self.env(v),
            }
        }
        // Two versions run side by side during blue-green and canary: slots need 2 × replicas
        // consecutive ports.
        if let (Port::From(p), Some(node)) = (s.port, port_node)
            && u32::from(p) + 2 * s.replicas - 1 > u32::from(u16::MAX)
        {
            let m = format!(
                "`port: {p}` leaves no room for {} ports (2 × replicas) below 65536",
                2 * s.replicas
            );
            self.err(node, SVC_INVALID_VALUE, m);
        }
        if let Some(n) = node.get("strategy") {
            self.check_unavailable(&s.strategy, s.replicas, n);
        }
        // An environment's strategy or replicas are checked together with what it inherits.
        if let Some(envs) = node.get("environments").and_then(|e| e.map()) {
            for (k, v) in envs {
                let env = k.scalar_text().unwrap_or_default();
                let Some(o) = overrides.get(&env) else {
                    continue;
                };
                let strategy = o.strategy.as_ref().unwrap_or(&s.strategy);
                let replicas = o.replicas.unwrap_or(s.replicas);
                let at = v.get("strategy").or(v.get("replicas")).unwrap_or(v);
                self.check_unavailable(strategy, replicas, at);
                if let (Port::From(p), Some(_)) = (s.port, v.get("replicas"))
                    && u32::from(p) + 2 * replicas - 1 > u32::from(u16::MAX)
                {
                    let m = format!(
                        "`port: {p}` leaves no room for {} ports (2 × replicas) below 65536",
                        2 * replicas
                    );
                    self.err(at, SVC_INVALID_VALUE, m);
                }
            }
        }
        (s, overrides)
    }

    fn check_unavailable(&mut self, strategy: &Strategy, replicas: u32, at: &Node) {
        if let Strategy::Rolling {
            max_unavailable, ..
        } = strategy
            && *max_unavailable > replicas
        {
            let m = format!(
                "`max-unavailable: {max_unavailable}` is more than the {replicas} replicas"
            );
            self.err(at, SVC_INVALID_VALUE, m).help =
                Some(format!("at most `max-unavailable: {replicas}`"));
        }
    }

    /// The entries of a mapping keyed by environment name (`route`, `environments`): a value
    /// that is not a mapping and names that are not environment names are reported; the
    /// others come back with their key node (for positions) and value.
    fn environments<'n>(
        &mut self,
        node: &'n Node,
        key: &str,
        example: &str,
    ) -> Vec<(String, &'n Node, &'n Node)> {
        let Some(map) = node.map() else {
            if !matches!(node.v, V::Null) {
                let m = format!(
                    "`{key}` must be a mapping of environments, not {}",
                    node.describe()
                );
                self.err(node, SVC_INVALID_TYPE, m).help = Some(example.into());
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let env = k.scalar_text().unwrap_or_default();
            if valid_environment_name(&env) {
                out.push((env, k, v));
            } else {
                let d = self.err(
                    k,
                    SVC_INVALID_NAME,
                    format!("invalid environment name `{env}`"),
                );
                d.help = Some(
                    "lowercase letters, digits, `-` and `_`, at most 64 (as in .ouro/environments.yml)"
                        .into(),
                );
            }
        }
        out
    }

    /// `environments`: per-environment changes of one service.
    fn overrides(&mut self, service: &str, node: &Node) -> BTreeMap<String, Override> {
        let mut out = BTreeMap::new();
        let example = "environments:\n  production: {replicas: 3}";
        for (env, _, v) in self.environments(node, "environments", example) {
            let what = format!("the `{env}` changes of service `{service}`");
            let mut o = Override::default();
            for (ok, ov) in self.keys(v, OVERRIDE_KEYS, &what) {
                match ok.as_str() {
                    "replicas" => {
                        o.replicas = self
                            .int(ov, "replicas", 1, u64::from(MAX_REPLICAS))
                            .map(|n| n as u32);
                    }
                    "strategy" => o.strategy = Some(self.strategy(ov)),
                    "resources" => o.resources = Some(self.resources(ov)),
                    _ => o.env = self.env(ov),
                }
            }
            out.insert(env, o);
        }
        out
    }

    fn health(&mut self, node: &Node) -> Health {
        let mut h = Health::default();
        for (k, v) in self.keys(node, &["readiness", "liveness"], "`health`") {
            if matches!(v.v, V::Null) {
                continue;
            }
            let probe = self.probe(v, &k);
            if k == "readiness" {
                h.readiness = probe;
            } else {
                h.liveness = probe;
            }
        }
        h
    }

    fn probe(&mut self, node: &Node, which: &str) -> Option<Probe> {
        let what = format!("the `{which}` probe");
        if node.map().is_none() {
            let m = format!("{what} must be a mapping, not {}", node.describe());
            self.err(node, SVC_INVALID_TYPE, m).help = Some(
                "e.g. `{http: /healthz}`, `{tcp: true}` or `{command: \"test -f ok\"}`".into(),
            );
            return None;
        }
        let entries = self.keys(node, PROBE_KEYS, &what);
        let mut p = Probe {
            check: ProbeCheck::Tcp,
            interval_ms: 1000,
            timeout_ms: 1000,
            success_threshold: 1,
            failure_threshold: 3,
            start_period_ms: 0,
        };
        let mut check: Option<ProbeCheck> = None;
        let mut kinds = 0;
        let mut ok = true;
        for (k, v) in &entries {
            match k.as_str() {
                "http" | "tcp" | "command" => {
                    kinds += 1;
                    if kinds == 2 {
                        let d = self.err(
                            v,
                            SVC_BAD_PROBE,
                            format!("{what} has two checks; it needs exactly one"),
                        );
                        d.help = Some("one of `http`, `tcp` or `command`".into());
                        ok = false;
                    }
                    match k.as_str() {
                        "http" => {
                            if let Some(path) = self.string(v, "http") {
                                if !path.starts_with('/')
                                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                                {
                                    let d = self.err(
                                        v,
                                        SVC_BAD_PROBE,
                                        format!("`http: {path}` must be a path starting with `/`"),
                                    );
                                    d.help = Some("e.g. `http: /healthz` (the request goes to the replica's own port)".into());
                                    ok = false;
                                } else {
                                    check = Some(ProbeCheck::Http { path });
                                }
                            } else {
                                ok = false;
                            }
                        }
                        "tcp" => match v.v {
                            V::Bool(true) => check = Some(ProbeCheck::Tcp),
                            V::Bool(false) => {
                                let d =
                                    self.err(v, SVC_BAD_PROBE, "`tcp: false` is no check".into());
                                d.help =
                                    Some("write `tcp: true`, or use `http` or `command`".into());
                                ok = false;
                            }
                            _ => {
                                let m = format!("`tcp` must be `true`, not {}", v.describe());
                                self.err(v, SVC_INVALID_TYPE, m);
                                ok = false;
                            }
                        },
                        _ => match self.string(v, "command") {
                            Some(run) if !run.trim().is_empty() => {
                                check = Some(ProbeCheck::Command { run })
                            }
                            Some(_) => {
                                self.err(v, SVC_BAD_PROBE, "`command` is empty".into());
                                ok = false;
                            }
                            None => ok = false,
                        },
                    }
                }
                "interval" => match self.duration(v, "interval", 10) {
                    Some(ms) => p.interval_ms = ms,
                    None => ok = false,
                },
                "timeout" => match self.duration(v, "timeout", 10) {
                    Some(ms) => p.timeout_ms = ms,
                    None => ok = false,
                },
                "start-period" => match self.duration(v, "start-period", 0) {
                    Some(ms) => p.start_period_ms = ms,
                    None => ok = false,
                },
                "success" => match self.int(v, "success", 1, 100) {
                    Some(n) => {
                        // Kubernetes refuses a liveness success threshold other than 1: after
                        // one success a live process is live.
                        if which == "liveness" && n != 1 {
                            self.err(
                                v,
                                SVC_INVALID_VALUE,
                                "`success` of a liveness probe must be 1".into(),
                            );
                            ok = false;
                        }
                        p.success_threshold = n as u32;
                    }
                    None => ok = false,
                },
                _ => match self.int(v, "failure", 1, 100) {
                    Some(n) => p.failure_threshold = n as u32,
                    None => ok = false,
                },
            }
        }
        if kinds == 0 {
            let d = self.err(node, SVC_BAD_PROBE, format!("{what} has no check"));
            d.help = Some(format!(
                "add one of {}",
                PROBE_KINDS
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return None;
        }
        let check = check.filter(|_| ok && kinds == 1)?;
        p.check = check;
        Some(p)
    }

    fn stop(&mut self, node: &Node) -> Stop {
        let mut stop = Stop::default();
        for (k, v) in self.keys(node, &["signal", "grace"], "`stop`") {
            if k == "grace" {
                if let Some(ms) = self.duration(v, "grace", 0) {
                    stop.grace_ms = ms;
                }
                continue;
            }
            let Some(text) = self.string(v, "signal") else {
                continue;
            };
            let name = text.strip_prefix("SIG").unwrap_or(&text);
            if SIGNALS.contains(&name) {
                stop.signal = name.to_string();
            } else {
                let upper = name.to_ascii_uppercase();
                let d = self.err(
                    v,
                    SVC_UNKNOWN_SIGNAL,
                    format!("unknown stop signal `{text}`"),
                );
                d.help = Some(
                    match SIGNALS
                        .contains(&upper.as_str())
                        .then_some(upper.as_str())
                        .or_else(|| did_you_mean(name, SIGNALS))
                    {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("signals: {}", SIGNALS.join(", ")),
                    },
                );
            }
        }
        stop
    }

    fn drain(&mut self, node: &Node) -> Drain {
        let mut d = Drain::default();
        for (k, v) in self.keys(node, &["timeout", "upgrade-grace"], "`drain`") {
            if let Some(ms) = self.duration(v, &k, 0) {
                if k == "timeout" {
                    d.timeout_ms = ms;
                } else {
                    d.upgrade_grace_ms = ms;
                }
            }
        }
        d
    }

    fn resources(&mut self, node: &Node) -> Resources {
        let mut r = Resources::default();
        let allowed = ["memory", "open-files", "processes", "cpu"];
        for (k, v) in self.keys(node, &allowed, "`resources`") {
            match k.as_str() {
                // Below a mebibyte of address space not even `sh` starts.
                "memory" => r.memory_bytes = self.size(v, "memory", 1 << 20),
                "open-files" => r.open_files = self.int(v, "open-files", 1, 1 << 20),
                "processes" => r.processes = self.int(v, "processes", 1, 1 << 22),
                _ => {
                    if let Some(ms) = self.duration(v, "cpu", 1000) {
                        if !ms.is_multiple_of(1000) {
                            let m = format!(
                                "`cpu` is counted in whole seconds, not `{}`",
                                v.scalar_text().unwrap_or_default()
                            );
                            self.err(v, SVC_BAD_DURATION, m);
                        } else {
                            r.cpu_seconds = Some(ms / 1000);
                        }
                    }
                }
            }
        }
        r
    }

    fn env(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(map) = node.map() else {
            if !matches!(node.v, V::Null) {
                let m = format!("`env` must be a mapping, not {}", node.describe());
                self.err(node, SVC_INVALID_TYPE, m);
            }
            return env;
        };
        for (k, v) in map {
            let name = k.scalar_text().unwrap_or_default();
            if !valid_env_name(&name) {
                let d = self.err(
                    k,
                    SVC_BAD_ENV_VAR,
                    format!("invalid environment variable name `{name}`"),
                );
                d.help = Some("letters, digits and `_`, not starting with a digit".into());
                continue;
            }
            if name == "PORT" || name.starts_with("OURO_") {
                let d = self.err(
                    k,
                    SVC_BAD_ENV_VAR,
                    format!("`{name}` is set by Ouro for every replica"),
                );
                d.help = Some("Ouro sets PORT, OURO_SERVICE, OURO_VERSION, OURO_ENVIRONMENT and OURO_REPLICA; choose another name".into());
                continue;
            }
            let value = match &v.v {
                V::Str(s) if s.contains('\0') => {
                    let m = format!("the value of `{name}` contains a NUL character");
                    self.err(v, SVC_INVALID_VALUE, m);
                    continue;
                }
                V::Str(_) | V::Int(_) | V::Float(_) | V::Bool(_) => {
                    v.scalar_text().unwrap_or_default()
                }
                _ => {
                    let m = format!(
                        "the value of `{name}` must be a string, not {}",
                        v.describe()
                    );
                    self.err(v, SVC_INVALID_TYPE, m);
                    continue;
                }
            };
            env.insert(name, value);
        }
        env
    }

    fn routes(
        &mut self,
        service: &str,
        node: &Node,
        uses: &mut Vec<RouteUse>,
    ) -> BTreeMap<String, Route> {
        let mut out = BTreeMap::new();
        let example = "route:\n  staging: {listen: \"127.0.0.1:8081\"}";
        for (env, k, v) in self.environments(node, "route", example) {
            let what = format!("the `{env}` route");
            let mut route = Route::default();
            let mut ok = true;
            for (rk, rv) in self.keys(v, &["listen", "host"], &what) {
                let Some(text) = self.string(rv, &rk) else {
                    ok = false;
                    continue;
                };
                let placeholder = ["{cr}", "{repo}"].into_iter().find(|p| text.contains(p));
                if let Some(p) = placeholder
                    && (rk == "listen" || env != "review")
                {
                    let d = self.err(rv, SVC_BAD_ROUTE, format!("`{p}` in `{rk}` of {what}"));
                    d.help = Some(
                        "`{cr}` (the change request's number) and `{repo}` (its repository) are only replaced in the `host` of the `review` route"
                            .into(),
                    );
                    ok = false;
                    continue;
                }
                if rk == "listen" {
                    match check_listen(&text) {
                        Ok(norm) => route.listen = Some(norm),
                        Err(why) => {
                            let d = self.err(
                                rv,
                                SVC_BAD_ROUTE,
                                format!("`listen: {text}` is not HOST:PORT: {why}"),
                            );
                            d.help = Some(
                                "e.g. `127.0.0.1:8081`, `0.0.0.0:80`, `[::1]:8080`, `localhost:8080`"
                                    .into(),
                            );
                            ok = false;
                        }
                    }
                } else if valid_host(&text.replace("{cr}", "1").replace("{repo}", "app")) {
                    route.host = Some(text.to_ascii_lowercase());
                } else {
                    let d = self.err(
                        rv,
                        SVC_BAD_ROUTE,
                        format!("`host: {text}` is not a host name"),
                    );
                    d.help =
                        Some("a DNS name without port or scheme, e.g. `shop.example.com`".into());
                    ok = false;
                }
            }
            if env == "review" && ok && !route.host.as_ref().is_some_and(|h| h.contains("{cr}")) {
                let d = self.err(
                    k,
                    SVC_BAD_ROUTE,
                    "the `review` route needs a `host` with `{cr}`".into(),
                );
                d.help = Some("every review environment needs its own host, e.g. `host: \"cr-{cr}.review.example.com\"`".into());
                ok = false;
            }
            if ok {
                uses.push(RouteUse {
                    environment: env.clone(),
                    listen: route.listen.clone(),
                    host: route.host.clone(),
                    service: service.to_string(),
                    line: k.line,
                    col: k.col,
                    len: k.len,
                });
                out.insert(env, route);
            }
        }
        out
    }

    fn route_conflicts(&mut self, uses: &[RouteUse]) {
        let mut seen: BTreeMap<(&str, Option<&str>, Option<&str>), &str> = BTreeMap::new();
        for u in uses {
            let key = (
                u.environment.as_str(),
                u.listen.as_deref(),
                u.host.as_deref(),
            );
            // Each `:0` listen gets its own free port: no conflict.
            let any_port = u.listen.as_deref().is_some_and(|l| l.ends_with(":0"));
            if let Some(first) = seen.get(&key).filter(|_| !any_port) {
                let listen = u.listen.as_deref().unwrap_or("the default listen address");
                let host = u
                    .host
                    .as_deref()
                    .map(|h| format!("host `{h}`"))
                    .unwrap_or_else(|| "every host".into());
                let d = Diagnostic::error(
                    self.file,
                    u.line,
                    u.col,
                    SVC_ROUTE_CONFLICT,
                    format!(
                        "services `{first}` and `{}` both route {listen} for {host} in `{}`",
                        u.service, u.environment
                    ),
                )
                .with_len(u.len)
                .with_help("give one of them another `listen` or `host`");
                self.diags.push(d);
            } else {
                seen.insert(key, &u.service);
            }
        }
    }

    fn strategy(&mut self, node: &Node) -> Strategy {
        let blue_green = Strategy::BlueGreen {
            keep_warm_ms: DEFAULT_KEEP_WARM_MS,
        };
        let (kind, kind_node) = match &node.v {
            V::Str(s) => (s.clone(), node),
            V::Map(_) => match node.get("kind") {
                Some(k) => match k.as_str() {
                    Some(s) => (s.to_string(), k),
                    None => {
                        let m = format!("`kind` must be a string, not {}", k.describe());
                        self.err(k, SVC_INVALID_TYPE, m);
                        return blue_green;
                    }
                },
                None => {
                    let d = self.err(node, SVC_MISSING_KEY, "`strategy` has no `kind`".into());
                    d.help = Some(format!("`kind` is one of {}", STRATEGIES.join(", ")));
                    return blue_green;
                }
            },
            _ => {
                let m = format!(
                    "`strategy` must be a name or a mapping with `kind`, not {}",
                    node.describe()
                );
                self.err(node, SVC_INVALID_TYPE, m);
                return blue_green;
            }
        };
        if !STRATEGIES.contains(&kind.as_str()) {
            let d = self.err(
                kind_node,
                SVC_UNKNOWN_STRATEGY,
                format!("unknown strategy `{kind}`"),
            );
            d.help = Some(match did_you_mean(&kind, STRATEGIES) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("strategies: {}", STRATEGIES.join(", ")),
            });
            return blue_green;
        }
        let allowed: &[&str] = match kind.as_str() {
            "recreate" => &["kind"],
            "rolling" => &["kind", "max-surge", "max-unavailable"],
            "blue-green" => &["kind", "keep-warm"],
            _ => &["kind", "steps", "sticky", "analysis", "keep-warm"],
        };
        let entries = if node.map().is_some() {
            self.keys(node, allowed, &format!("a `{kind}` strategy"))
        } else {
            Vec::new()
        };
        match kind.as_str() {
            "recreate" => Strategy::Recreate,
            "rolling" => {
                let (mut surge, mut unavailable) = (1, 0);
                for (k, v) in &entries {
                    match k.as_str() {
                        "max-surge" => {
                            if let Some(n) = self.int(v, k, 0, u64::from(MAX_REPLICAS)) {
                                surge = n as u32;
                            }
                        }
                        "max-unavailable" => {
                            if let Some(n) = self.int(v, k, 0, u64::from(MAX_REPLICAS)) {
                                unavailable = n as u32;
                            }
                        }
                        _ => {}
                    }
                }
                if surge == 0 && unavailable == 0 {
                    self.err(
                        node,
                        SVC_INVALID_VALUE,
                        "`max-surge` and `max-unavailable` are both 0: the rollout could not move"
                            .into(),
                    );
                }
                Strategy::Rolling {
                    max_surge: surge,
                    max_unavailable: unavailable,
                }
            }
            "blue-green" => {
                let mut keep_warm_ms = DEFAULT_KEEP_WARM_MS;
                for (k, v) in &entries {
                    if k == "keep-warm"
                        && let Some(ms) = self.duration(v, "keep-warm", 0)
                    {
                        keep_warm_ms = ms;
                    }
                }
                Strategy::BlueGreen { keep_warm_ms }
            }
            _ => {
                let mut canary = Canary {
                    steps: DEFAULT_CANARY_WEIGHTS
                        .iter()
                        .map(|w| CanaryStep {
                            weight: *w,
                            pause_ms: DEFAULT_PAUSE_MS,
                        })
                        .collect(),
                    sticky: None,
                    analysis: Analysis::default(),
                    keep_warm_ms: DEFAULT_KEEP_WARM_MS,
                };
                for (k, v) in &entries {
                    match k.as_str() {
                        "steps" => canary.steps = self.steps(v),
                        "sticky" => canary.sticky = self.sticky(v),
                        "analysis" => canary.analysis = self.analysis(v),
                        "keep-warm" => {
                            if let Some(ms) = self.duration(v, "keep-warm", 0) {
                                canary.keep_warm_ms = ms;
                            }
                        }
                        _ => {}
                    }
                }
                Strategy::Canary(canary)
            }
        }
    }

    fn steps(&mut self, node: &Node) -> Vec<CanaryStep> {
        let help = "e.g. `steps: [10, 25, {weight: 50, pause: 1m}, 100]`";
        let Some(items) = node.seq() else {
            let m = format!("`steps` must be a list, not {}", node.describe());
            self.err(node, SVC_INVALID_TYPE, m).help = Some(help.into());
            return Vec::new();
        };
        if items.is_empty() {
            self.err(node, SVC_BAD_STEPS, "`steps` is empty".into())
                .help = Some(help.into());
            return Vec::new();
        }
        if items.len() > MAX_CANARY_STEPS {
            let m = format!("{} canary steps; at most {MAX_CANARY_STEPS}", items.len());
            self.err(node, SVC_BAD_STEPS, m);
        }
        let mut steps = Vec::new();
        let mut previous: Option<u8> = None;
        for item in items {
            let (weight_node, pause) = match &item.v {
                V::Map(_) => {
                    let mut weight = None;
                    let mut pause = Some(DEFAULT_PAUSE_MS);
                    for (k, v) in self.keys(item, &["weight", "pause"], "a canary step") {
                        if k == "weight" {
                            weight = Some(v);
                        } else {
                            pause = self.duration(v, "pause", 0);
                        }
                    }
                    let Some(w) = weight else {
                        self.err(item, SVC_MISSING_KEY, "a canary step needs `weight`".into());
                        continue;
                    };
                    (w, pause)
                }
                _ => (item, Some(DEFAULT_PAUSE_MS)),
            };
            let weight = match weight_node.v {
                V::Int(n) if (1..=100).contains(&n) => n as u8,
                V::Int(n) => {
                    let m = format!("canary weight {n} is outside 1 to 100");
                    self.err(weight_node, SVC_BAD_STEPS, m);
                    continue;
                }
                _ => {
                    let m = format!(
                        "a canary weight must be a number of percent, not {}",
                        describe_value(weight_node)
                    );
                    self.err(weight_node, SVC_INVALID_TYPE, m).help = Some(help.into());
                    continue;
                }
            };
            if let Some(p) = previous
                && weight <= p
            {
                let m = format!("canary weight {weight} does not rise above the {p} before it");
                self.err(weight_node, SVC_BAD_STEPS, m);
            }
            previous = Some(weight);
            if let Some(pause_ms) = pause {
                steps.push(CanaryStep { weight, pause_ms });
            }
        }
        if let (Some(p), Some(last)) = (previous, items.last())
            && p != 100
        {
            let m = format!("the last canary step is {p}; it must be 100");
            self.err(last, SVC_BAD_STEPS, m).help =
                Some("the last step sends all traffic to the new version".into());
        }
        steps
    }

    fn sticky(&mut self, node: &Node) -> Option<Sticky> {
        let entries = self.keys(node, &["cookie", "header"], "`sticky`");
        if matches!(node.v, V::Null) {
            return None;
        }
        if entries.len() != 1 {
            if node.map().is_some() {
                let d = self.err(
                    node,
                    SVC_INVALID_VALUE,
                    "`sticky` needs exactly one of `cookie` and `header`".into(),
                );
                d.help = Some("e.g. `sticky: {cookie: session}`".into());
            }
            return None;
        }
        let (k, v) = &entries[0];
        let name = self.string(v, k)?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            let m = format!("`{k}: {name}` is not a valid {k} name");
            self.err(v, SVC_INVALID_VALUE, m);
            return None;
        }
        Some(if k == "cookie" {
            Sticky::Cookie(name)
        } else {
            Sticky::Header(name.to_ascii_lowercase())
        })
    }

    fn analysis(&mut self, node: &Node) -> Analysis {
        let mut a = Analysis::default();
        let allowed = [
            "max-error-rate",
            "max-p99",
            "max-error-rate-increase",
            "min-requests",
        ];
        for (k, v) in self.keys(node, &allowed, "`analysis`") {
            match k.as_str() {
                "max-error-rate" => {
                    if let Some(p) = self.percent(v, &k) {
                        a.max_error_rate = p;
                    }
                }
                "max-error-rate-increase" => {
                    if let Some(p) = self.percent(v, &k) {
                        a.max_error_rate_increase = p;
                    }
                }
                "max-p99" => {
                    if let Some(ms) = self.duration(v, &k, 1) {
                        a.max_p99_ms = ms;
                    }
                }
                _ => {
                    if let Some(n) = self.int(v, &k, 0, 1_000_000_000) {
                        a.min_requests = n;
                    }
                }
            }
        }
        a
    }
}

/// A scalar shown with its text (`"8080"` vs 8080 matters for `port`).
fn describe_value(node: &Node) -> String {
    match &node.v {
        V::Str(s) => format!("the string `{s}`"),
        _ => node.describe().to_string(),
    }
}

/// `500ms`, `10s`, `5m`, `2h`, `1d` and sums of them (`1m30s`) in milliseconds; `0` alone is
/// zero.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "0" {
        return Some(0);
    }
    let mut rest = t;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// `4096`, `512K`, `512M`, `1G`, `1T` (also `Mi`, `MB`, `MiB`; all powers of 1024) in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let shift = match t[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn format_ms(ms: u64) -> String {
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn format_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// A DNS-1035 label: the Kubernetes target names Services and Deployments after the service.
fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The rule of `.ouro/environments.yml`, so that every environment Release accepts can have a
/// route.
fn valid_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// RFC 9110 token characters (cookie and header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `HOST:PORT` and returns it normalised (lowercase host) for conflict checks.
fn check_listen(text: &str) -> Result<String, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "no `:PORT`".to_string())?;
    // Port 0: the proxy picks a free port when it first routes the service (the environment's
    // page and API show it); handy for tests and review environments.
    let port: u16 = port
        .parse()
        .ok()
        .ok_or_else(|| format!("port `{port}` is not 0 to 65535"))?;
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner
            .strip_suffix(']')
            .and_then(|i| i.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| format!("`{host}` is not an IPv6 address in brackets"))?;
        return Ok(format!("[{ip}]:{port}"));
    }
    if host.contains(':') {
        return Err("an IPv6 address goes in brackets, e.g. `[::1]:8080`".into());
    }
    if host.is_empty() {
        return Err("no host before the `:`".into());
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(format!("{ip}:{port}"));
    }
    // Dotted digits that are no IPv4 address (`999.0.0.1`) are a typo, not a host name.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') || !valid_host(host) {
        return Err(format!("`{host}` is not an IP address or host name"));
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 s",
            "-1s",
            "1x",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("512Mi"), Some(512 << 20));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        for bad in ["", "M", "1.5G", "12X", "-1M", "1iB", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            check_listen("127.0.0.1:8081").as_deref(),
            Ok("127.0.0.1:8081")
        );
        assert_eq!(check_listen("[::1]:80").as_deref(), Ok("[::1]:80"));
        assert_eq!(check_listen("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(check_listen("LocalHost:80").as_deref(), Ok("localhost:80"));
        for bad in [
            "8080",
            ":80",
            "1.2.3.4:70000",
            "::1:80",
            "[zz]:80",
            "999.1.1.1:80",
            "a b:80",
        ] {
            assert!(check_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_service_name("web-2"));
        for bad in ["", "Web", "2web", "web-", "we_b", &"a".repeat(41)] {
            assert!(!valid_service_name(bad), "{bad}");
        }
        assert!(valid_environment_name("pre_prod"));
        assert!(valid_env_name("RUST_LOG") && !valid_env_name("1A") && !valid_env_name("A-B"));
    }

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::BTreeSet::new();
        for (c, _) in CODES {
            assert!(c.starts_with("deploy.svc_"), "{c}");
            assert!(seen.insert(*c), "duplicate {c}");
        }
    }
}
