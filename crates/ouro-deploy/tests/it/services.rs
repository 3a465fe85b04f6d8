//! `.ouro/services.yml`: a full file parses to the model, defaults, every problem with its
//! position and stable code (snapshots of the rendered diagnostics), and no input panics.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ouro_deploy::services::{self, CODES};
use ouro_deploy::spec;
use ouro_deploy::spec::{
    Analysis, Canary, CanaryStep, Drain, Health, Port, Probe, ProbeCheck, Resources, Route,
    Service, ServicesFile, Sticky, Stop,
};
use proptest::prelude::*;

const FILE: &str = services::FILE;

fn codes(text: &str) -> Vec<&'static str> {
    services::parse(FILE, text)
        .expect_err("must be refused")
        .iter()
        .map(|d| d.code)
        .collect()
}

const FULL: &str = r#"services:
  web:
    run: ./bin/web --port "$PORT"
    port: 9000
    replicas: 2
    health:
      readiness: {http: /healthz, interval: 500ms, timeout: 2s, success: 2, failure: 5, start-period: 10s}
      liveness: {tcp: true}
    stop: {signal: SIGINT, grace: 20s}
    route:
      staging: {listen: "127.0.0.1:8081"}
      production: {listen: "0.0.0.0:80", host: Shop.Example.com}
      review: {host: "cr-{cr}.review.example.com"}
    strategy:
      kind: canary
      steps: [{weight: 10, pause: 1m}, 25, 50, 100]
      sticky: {cookie: session}
      analysis: {max-error-rate: 0.5%, max-p99: 500ms, max-error-rate-increase: 1%, min-requests: 50}
      keep-warm: 10m
    drain: {timeout: 1m30s, upgrade-grace: 2s}
    resources: {memory: 512M, open-files: 4096, processes: 256, cpu: 60s}
    env: {RUST_LOG: info, WORKERS: 4, DEBUG: false}
  worker:
    run: ./bin/worker
    health:
      liveness: {command: "test -f ok"}
    strategy: {kind: rolling, max-surge: 0, max-unavailable: 1}
  admin:
    run: ./bin/admin
    route:
      production: {listen: "0.0.0.0:80", host: admin.example.com}
    strategy: recreate
"#;

#[test]
fn a_full_file_parses_to_the_model() {
    let parsed = services::parse(FILE, FULL).unwrap();
    let mut expected = ServicesFile::default();
    expected.services.insert(
        "web".into(),
        Service {
            name: "web".into(),
            run: "./bin/web --port \"$PORT\"".into(),
            port: Port::From(9000),
            replicas: 2,
            health: Health {
                readiness: Some(Probe {
                    check: ProbeCheck::Http {
                        path: "/healthz".into(),
                    },
                    interval_ms: 500,
                    timeout_ms: 2000,
                    success_threshold: 2,
                    failure_threshold: 5,
                    start_period_ms: 10_000,
                }),
                liveness: Some(Probe {
                    check: ProbeCheck::Tcp,
                    interval_ms: 1000,
                    timeout_ms: 1000,
                    success_threshold: 1,
                    failure_threshold: 3,
                    start_period_ms: 0,
                }),
            },
            stop: Stop {
                signal: "INT".into(),
                grace_ms: 20_000,
            },
            routes: BTreeMap::from([
                (
                    "staging".to_string(),
                    Route {
                        listen: Some("127.0.0.1:8081".into()),
                        host: None,
                    },
                ),
                (
                    "production".to_string(),
                    Route {
                        listen: Some("0.0.0.0:80".into()),
                        host: Some("shop.example.com".into()),
                    },
                ),
                (
                    "review".to_string(),
                    Route {
                        listen: None,
                        host: Some("cr-{cr}.review.example.com".into()),
                    },
                ),
            ]),
            strategy: spec::Strategy::Canary(Canary {
                steps: vec![
                    CanaryStep {
                        weight: 10,
                        pause_ms: 60_000,
                    },
                    CanaryStep {
                        weight: 25,
                        pause_ms: 30_000,
                    },
                    CanaryStep {
                        weight: 50,
                        pause_ms: 30_000,
                    },
                    CanaryStep {
                        weight: 100,
                        pause_ms: 30_000,
                    },
                ],
                sticky: Some(Sticky::Cookie("session".into())),
                analysis: Analysis {
                    max_error_rate: 0.005,
                    max_p99_ms: 500,
                    max_error_rate_increase: 0.01,
                    min_requests: 50,
                },
                keep_warm_ms: 600_000,
            }),
            drain: Drain {
                timeout_ms: 90_000,
                upgrade_grace_ms: 2000,
            },
            resources: Resources {
                memory_bytes: Some(512 * 1024 * 1024),
                open_files: Some(4096),
                processes: Some(256),
                cpu_seconds: Some(60),
            },
            env: BTreeMap::from([
                ("DEBUG".to_string(), "false".to_string()),
                ("RUST_LOG".to_string(), "info".to_string()),
                ("WORKERS".to_string(), "4".to_string()),
            ]),
        },
    );
    expected.services.insert(
        "worker".into(),
        Service {
            name: "worker".into(),
            run: "./bin/worker".into(),
            port: Port::Auto,
            replicas: 1,
            health: Health {
                readiness: None,
                liveness: Some(Probe {
                    check: ProbeCheck::Command {
                        run: "test -f ok".into(),
                    },
                    interval_ms: 1000,
                    timeout_ms: 1000,
                    success_threshold: 1,
                    failure_threshold: 3,
                    start_period_ms: 0,
                }),
            },
            stop: Stop::default(),
            routes: BTreeMap::new(),
            strategy: spec::Strategy::Rolling {
                max_surge: 0,
                max_unavailable: 1,
            },
            drain: Drain::default(),
            resources: Resources::default(),
            env: BTreeMap::new(),
        },
    );
    expected.services.insert(
        "admin".into(),
        Service {
            name: "admin".into(),
            run: "./bin/admin".into(),
            port: Port::Auto,
            replicas: 1,
            health: Health::default(),
            stop: Stop::default(),
            routes: BTreeMap::from([(
                "production".to_string(),
                Route {
                    listen: Some("0.0.0.0:80".into()),
                    host: Some("admin.example.com".into()),
                },
            )]),
            strategy: spec::Strategy::Recreate,
            drain: Drain::default(),
            resources: Resources::default(),
            env: BTreeMap::new(),
        },
    );
    assert_eq!(parsed, expected);
    let web = &parsed.services["web"];
    assert_eq!(web.stop.signal_number(), libc::SIGINT);
    assert_eq!(
        web.route_for("review-42").and_then(|r| r.host).as_deref(),
        Some("cr-42.review.example.com")
    );
    // `review-REPO-N`: the number is the last part, whatever the repository's name holds.
    assert_eq!(
        web.route_for("review-shop-api.v2-7")
            .and_then(|r| r.host)
            .as_deref(),
        Some("cr-7.review.example.com")
    );
    assert_eq!(web.route_for("review-shop-x"), None);
}

#[test]
fn a_review_host_names_the_repository_as_a_host_label() {
    let f = services::parse(
        services::FILE,
        "services:\n  web:\n    run: x\n    route:\n      review: {host: \"{repo}-{cr}.review.example.com\"}\n",
    )
    .unwrap();
    let web = &f.services["web"];
    let host = |env: &str| web.route_for(env).and_then(|r| r.host);
    assert_eq!(
        host("review-Shop_api.v2-12").as_deref(),
        Some("shop-api-v2-12.review.example.com")
    );
    assert_eq!(
        host("review-app-1").as_deref(),
        Some("app-1.review.example.com")
    );
    assert_ne!(host("review-app-1"), host("review-web-1"));
    assert_eq!(
        ouro_deploy::spec::review_parts("review-my-app-3"),
        Some(("my-app", "3"))
    );
    assert_eq!(ouro_deploy::spec::review_parts("review-3"), Some(("", "3")));
    assert_eq!(ouro_deploy::spec::review_parts("staging"), None);
}

#[test]
fn a_minimal_service_gets_the_documented_defaults() {
    let f = services::parse(FILE, "services:\n  web:\n    run: ./web\n").unwrap();
    let web = &f.services["web"];
    assert_eq!(web.port, Port::Auto);
    assert_eq!(web.replicas, 1);
    assert_eq!(web.health, Health::default());
    assert_eq!(web.stop, Stop::default());
    assert_eq!(
        (web.stop.signal.as_str(), web.stop.grace_ms),
        ("TERM", 10_000)
    );
    assert_eq!(
        web.strategy,
        spec::Strategy::BlueGreen {
            keep_warm_ms: 300_000
        }
    );
    assert_eq!(web.drain, Drain::default());
    assert!(web.routes.is_empty() && web.env.is_empty());

    // A probe with only its check: interval 1s, timeout 1s, success 1, failure 3, start 0s.
    let f = services::parse(
        FILE,
        "services:\n  web:\n    run: ./web\n    health: {readiness: {http: /}}\n",
    )
    .unwrap();
    let p = f.services["web"].health.readiness.clone().unwrap();
    assert_eq!(
        (
            p.interval_ms,
            p.timeout_ms,
            p.success_threshold,
            p.failure_threshold,
            p.start_period_ms
        ),
        (1000, 1000, 1, 3, 0)
    );

    // Bare strategy names take their defaults; bare canary weights pause 30s.
    let f = services::parse(
        FILE,
        "services:\n  a: {run: x, strategy: canary}\n  b: {run: x, strategy: rolling}\n  c: {run: x, strategy: {kind: blue-green}}\n  d: {run: x, strategy: {kind: canary, steps: [50, 100]}}\n",
    )
    .unwrap();
    let spec::Strategy::Canary(c) = &f.services["a"].strategy else {
        panic!("a is canary: {:?}", f.services["a"].strategy)
    };
    let weights: Vec<u8> = c.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [10, 25, 50, 100]);
    assert_eq!(c.analysis, Analysis::default());
    assert_eq!((c.sticky.clone(), c.keep_warm_ms), (None, 300_000));
    assert_eq!(
        f.services["b"].strategy,
        spec::Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0
        }
    );
    assert_eq!(
        f.services["c"].strategy,
        spec::Strategy::BlueGreen {
            keep_warm_ms: 300_000
        }
    );
    let spec::Strategy::Canary(d) = &f.services["d"].strategy else {
        panic!("d is canary")
    };
    assert!(d.steps.iter().all(|s| s.pause_ms == 30_000));
}

/// Bad files, each named for what is wrong with it, with the codes it must produce. The rendered
/// diagnostics (message, position, underline, help) are snapshots.
const BAD: &[(&str, &str, &[&str])] = &[
    ("not_yaml", "services:\n  web: [\n", &[services::SVC_SYNTAX]),
    (
        "environment_overrides",
        "services:\n  web:\n    run: x\n    replicas: 2\n    strategy: {kind: rolling, max-unavailable: 2}\n    environments:\n      Prod: {replicas: 3}\n      staging: {replicas: 1, route: {}}\n      production: {strategy: {kind: canary, steps: [150]}}\n      review: [1]\n",
        &[
            services::SVC_INVALID_NAME,
            services::SVC_INVALID_VALUE,
            services::SVC_UNKNOWN_KEY,
            services::SVC_BAD_STEPS,
            services::SVC_INVALID_TYPE,
        ],
    ),
    (
        "duplicate_key",
        "services:\n  web:\n    run: a\n    run: b\n",
        &[services::SVC_DUPLICATE_KEY],
    ),
    (
        "same_name_twice",
        // YAML tells `true` from `"true"` and `1` from `0x1`; the node tree refuses them as one
        // name all the same.
        "services:\n  true: {run: x}\n  \"true\": {run: y}\n",
        &[services::SVC_DUPLICATE_KEY],
    ),
    (
        "same_route_twice",
        "services:\n  web:\n    run: x\n    route: {1: {}, 0x1: {}}\n",
        &[services::SVC_DUPLICATE_KEY],
    ),
    ("empty_file", "", &[services::SVC_EMPTY]),
    ("empty_services", "services: {}\n", &[services::SVC_EMPTY]),
    (
        "unknown_keys",
        "services:\n  web:\n    run: ./web\n    replica: 2\n    routes: {}\n    helth: {}\nversion: 1\n",
        &[
            services::SVC_UNKNOWN_KEY,
            services::SVC_UNKNOWN_KEY,
            services::SVC_UNKNOWN_KEY,
            services::SVC_UNKNOWN_KEY,
        ],
    ),
    (
        "wrong_types",
        "services:\n  web:\n    run: [a, b]\n    replicas: two\n    port: \"8080\"\n    health: []\n    env: [A]\n",
        &[
            services::SVC_INVALID_TYPE,
            services::SVC_INVALID_TYPE,
            services::SVC_INVALID_TYPE,
            services::SVC_INVALID_TYPE,
            services::SVC_INVALID_TYPE,
        ],
    ),
    (
        "service_not_a_mapping",
        "services:\n  web: ./bin/web\n",
        &[services::SVC_INVALID_TYPE],
    ),
    (
        "missing_run",
        "services:\n  web:\n    replicas: 2\n  api:\n",
        &[services::SVC_MISSING_KEY, services::SVC_MISSING_KEY],
    ),
    (
        "replicas_range",
        "services:\n  a: {run: x, replicas: 0}\n  b: {run: x, replicas: 65}\n",
        &[services::SVC_INVALID_VALUE, services::SVC_INVALID_VALUE],
    ),
    (
        "port_range",
        "services:\n  a: {run: x, port: 0}\n  b: {run: x, port: 65530, replicas: 4}\n",
        &[services::SVC_INVALID_VALUE, services::SVC_INVALID_VALUE],
    ),
    (
        "names",
        "services:\n  Web:\n    run: x\n  web_2:\n    run: x\n    route:\n      Staging: {}\n",
        &[
            services::SVC_INVALID_NAME,
            services::SVC_INVALID_NAME,
            services::SVC_INVALID_NAME,
        ],
    ),
    (
        "probe_checks",
        "services:\n  web:\n    run: x\n    health:\n      readiness: {interval: 1s}\n      liveness: {tcp: true, http: /ok}\n",
        &[services::SVC_BAD_PROBE, services::SVC_BAD_PROBE],
    ),
    (
        "probe_http_path",
        "services:\n  web:\n    run: x\n    health:\n      readiness: {http: healthz}\n      liveness: {tcp: false, success: 2}\n",
        &[
            services::SVC_BAD_PROBE,
            services::SVC_BAD_PROBE,
            services::SVC_INVALID_VALUE,
        ],
    ),
    (
        "durations",
        "services:\n  web:\n    run: x\n    health:\n      readiness: {tcp: true, interval: 10, timeout: 1.5s, start-period: 40d}\n    stop: {grace: soon}\n    drain: {timeout: 0ms, upgrade-grace: 1m2}\n",
        &[
            services::SVC_BAD_DURATION,
            services::SVC_BAD_DURATION,
            services::SVC_BAD_DURATION,
            services::SVC_BAD_DURATION,
            services::SVC_BAD_DURATION,
        ],
    ),
    (
        "sizes_and_limits",
        "services:\n  web:\n    run: x\n    resources: {memory: 1.5G, open-files: 0, processes: many, cpu: 1500ms}\n  api:\n    run: x\n    resources: {memory: 4K}\n",
        &[
            services::SVC_BAD_SIZE,
            services::SVC_INVALID_VALUE,
            services::SVC_INVALID_TYPE,
            services::SVC_BAD_DURATION,
            services::SVC_BAD_SIZE,
        ],
    ),
    (
        "percentages",
        "services:\n  web:\n    run: x\n    strategy:\n      kind: canary\n      analysis: {max-error-rate: 0.01, max-error-rate-increase: 150%}\n",
        &[services::SVC_BAD_PERCENT, services::SVC_BAD_PERCENT],
    ),
    (
        "signals",
        "services:\n  a: {run: x, stop: {signal: term}}\n  b: {run: x, stop: {signal: SIGSTOP}}\n",
        &[services::SVC_UNKNOWN_SIGNAL, services::SVC_UNKNOWN_SIGNAL],
    ),
    (
        "strategies",
        "services:\n  a: {run: x, strategy: blue-gren}\n  b: {run: x, strategy: {max-surge: 1}}\n  c: {run: x, strategy: {kind: rolling, max-surge: 0, max-unavailable: 0}}\n  d: {run: x, strategy: {kind: blue-green, steps: [100]}}\n",
        &[
            services::SVC_UNKNOWN_STRATEGY,
            services::SVC_MISSING_KEY,
            services::SVC_INVALID_VALUE,
            services::SVC_UNKNOWN_KEY,
        ],
    ),
    (
        "canary_steps",
        "services:\n  a: {run: x, strategy: {kind: canary, steps: [10, 50, 50, 100]}}\n  b: {run: x, strategy: {kind: canary, steps: [10, 25, 50]}}\n  c: {run: x, strategy: {kind: canary, steps: [0, 101, 100]}}\n  d: {run: x, strategy: {kind: canary, steps: []}}\n  e: {run: x, strategy: {kind: canary, steps: [{pause: 1m}, 100]}}\n",
        &[
            services::SVC_BAD_STEPS,
            services::SVC_BAD_STEPS,
            services::SVC_BAD_STEPS,
            services::SVC_BAD_STEPS,
            services::SVC_BAD_STEPS,
            services::SVC_MISSING_KEY,
        ],
    ),
    (
        "sticky",
        "services:\n  a: {run: x, strategy: {kind: canary, sticky: {cookie: a, header: b}}}\n  b: {run: x, strategy: {kind: canary, sticky: {header: \"x y\"}}}\n",
        &[services::SVC_INVALID_VALUE, services::SVC_INVALID_VALUE],
    ),
    (
        "env_vars",
        "services:\n  web:\n    run: x\n    env:\n      1BAD: a\n      MY-VAR: b\n      PORT: \"80\"\n      OURO_VERSION: x\n      OK: [1]\n",
        &[
            services::SVC_BAD_ENV_VAR,
            services::SVC_BAD_ENV_VAR,
            services::SVC_BAD_ENV_VAR,
            services::SVC_BAD_ENV_VAR,
            services::SVC_INVALID_TYPE,
        ],
    ),
    (
        "cr_outside_review",
        "services:\n  web:\n    run: x\n    route:\n      staging: {host: \"cr-{cr}.example.com\"}\n      review: {listen: \"0.0.0.0:{cr}\"}\n",
        &[services::SVC_BAD_ROUTE, services::SVC_BAD_ROUTE],
    ),
    (
        "review_without_cr",
        "services:\n  web:\n    run: x\n    route:\n      review: {host: review.example.com}\n",
        &[services::SVC_BAD_ROUTE],
    ),
    (
        "listen_and_host",
        "services:\n  web:\n    run: x\n    route:\n      a: {listen: \"8080\"}\n      b: {listen: \"::1:80\"}\n      c: {listen: \"localhost:http\"}\n      d: {host: \"https://shop.example.com\"}\n",
        &[
            services::SVC_BAD_ROUTE,
            services::SVC_BAD_ROUTE,
            services::SVC_BAD_ROUTE,
            services::SVC_BAD_ROUTE,
        ],
    ),
    (
        "route_conflict",
        "services:\n  web:\n    run: x\n    route:\n      production: {listen: \"0.0.0.0:80\", host: shop.example.com}\n      staging: {}\n  shop:\n    run: y\n    route:\n      production: {listen: \"0.0.0.0:80\", host: SHOP.example.com}\n      staging:\n",
        &[services::SVC_ROUTE_CONFLICT, services::SVC_ROUTE_CONFLICT],
    ),
    (
        "nul_in_run",
        "services:\n  web:\n    run: \"./web\\0\"\n",
        &[services::SVC_INVALID_VALUE],
    ),
];

fn render_all(name: &str, text: &str) -> String {
    let diags = services::parse(FILE, text)
        .err()
        .unwrap_or_else(|| panic!("{name} must be refused"));
    let mut out = String::new();
    for d in &diags {
        out.push_str(&d.render(Some(text)));
        out.push('\n');
    }
    out
}

#[test]
fn bad_files_are_reported_with_positions_and_codes() {
    for (name, text, expected) in BAD {
        assert_eq!(&codes(text), expected, "codes of {name}");
        insta::assert_snapshot!(format!("bad_{name}"), render_all(name, text));
    }
}

#[test]
fn every_code_is_produced_by_a_case_and_documented() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/services.md"),
    )
    .unwrap();
    for (code, _) in CODES {
        let produced = BAD.iter().any(|(_, _, cs)| cs.contains(code))
            || [too_large().as_str(), too_many_services().as_str()]
                .iter()
                .any(|t| codes(t).contains(code));
        assert!(produced, "no case produces {code}");
        assert!(
            doc.contains(&format!("| `{code}` |")),
            "{code} is missing from the codes table of docs/services.md"
        );
    }
}

fn too_large() -> String {
    let mut s = String::from("services:\n  web:\n    run: |\n");
    while s.len() <= services::MAX_BYTES {
        s.push_str("      echo 0123456789012345678901234567890123456789\n");
    }
    s
}

fn too_many_services() -> String {
    let mut s = String::from("services:\n");
    for i in 0..=services::MAX_SERVICES {
        s.push_str(&format!("  s{i}: {{run: x}}\n"));
    }
    s
}

#[test]
fn size_and_budget_limits_are_diagnostics() {
    let d = services::parse(FILE, &too_large()).unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, services::SVC_SYNTAX);
    assert!(d[0].message.contains("at most 65536"), "{}", d[0].message);

    let d = services::parse(FILE, &too_many_services()).unwrap_err();
    assert_eq!(
        d.iter().map(|d| d.one_line()).collect::<Vec<_>>(),
        [".ouro/services.yml:2:3: error[deploy.svc_invalid_value]: 65 services; at most 64"]
    );

    // An alias bomb is refused by the node tree's budget, in this file's namespace.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in "bcdefghij".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        bomb.push_str(&format!(
            "{c}: &{c} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    bomb.push_str("services: *j\n");
    let d = services::parse(FILE, &bomb).unwrap_err();
    assert_eq!(d[0].code, services::SVC_SYNTAX);
    assert!(d[0].message.contains("budget"), "{}", d[0].message);
    assert!(
        !d[0].help.clone().unwrap_or_default().contains("pipeline"),
        "{:?}",
        d[0].help
    );

    let d = services::lint(FILE, b"services:\n  web: {run: caf\xe9}\n");
    assert_eq!(
        d.iter().map(|d| d.one_line()).collect::<Vec<_>>(),
        [
            ".ouro/services.yml:2:17: error[deploy.svc_syntax]: the file is not valid UTF-8 (byte 0xe9 at offset 26)"
        ]
    );
    assert!(services::lint(FILE, b"services:\n  web: {run: x}\n").is_empty());
}

#[test]
fn diagnostics_come_sorted_by_position() {
    let text = "services:\n  zeta:\n    run: x\n    replicas: 0\n  alpha:\n    replicas: 99\n";
    let lines: Vec<String> = services::parse(FILE, text)
        .unwrap_err()
        .iter()
        .map(|d| d.one_line())
        .collect();
    assert_eq!(
        lines,
        [
            ".ouro/services.yml:4:15: error[deploy.svc_invalid_value]: `replicas` must be 1 to 64",
            ".ouro/services.yml:5:3: error[deploy.svc_missing_key]: service `alpha` has no `run` command",
            ".ouro/services.yml:6:15: error[deploy.svc_invalid_value]: `replicas` must be 1 to 64",
        ]
    );
}

/// YAML-ish text built from the file's own keys and values, so that the generator reaches deep
/// into the checker rather than stopping at a syntax error.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "services",
        "web",
        "run",
        "port",
        "replicas",
        "health",
        "readiness",
        "liveness",
        "http",
        "tcp",
        "command",
        "interval",
        "timeout",
        "success",
        "failure",
        "start-period",
        "stop",
        "signal",
        "grace",
        "route",
        "staging",
        "review",
        "listen",
        "host",
        "strategy",
        "kind",
        "steps",
        "weight",
        "pause",
        "sticky",
        "cookie",
        "analysis",
        "max-error-rate",
        "max-p99",
        "keep-warm",
        "drain",
        "resources",
        "memory",
        "cpu",
        "env",
        "PORT",
        "A",
    ]);
    let scalar = prop::sample::select(vec![
        "auto",
        "0",
        "1",
        "65",
        "100",
        "-1",
        "1s",
        "0ms",
        "10x",
        "5m",
        "512M",
        "1%",
        "200%",
        "true",
        "false",
        "null",
        "/healthz",
        "TERM",
        "canary",
        "rolling",
        "blue-green",
        "127.0.0.1:80",
        "cr-{cr}.x.com",
        "[10, 50, 100]",
        "[100, 10]",
        "{}",
        "[]",
        "\"\"",
        "\"a\\0b\"",
        "x",
    ]);
    let line = (0usize..4, key, prop::bool::ANY, scalar).prop_map(|(indent, k, nest, v)| {
        if nest {
            format!("{}{k}:\n", "  ".repeat(indent))
        } else {
            format!("{}{k}: {v}\n", "  ".repeat(indent))
        }
    });
    prop::collection::vec(line, 0..40).prop_map(|lines| format!("services:\n{}", lines.concat()))
}

/// The full example with one line's value replaced, or one line dropped or repeated: mostly
/// well-formed YAML, so every check of the parser is reached with odd values.
fn mutated_full() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = FULL.lines().collect();
    let n = lines.len();
    let value = prop::sample::select(vec![
        "0",
        "-5",
        "65536",
        "1.5",
        "true",
        "null",
        "\"\"",
        "[]",
        "{}",
        "[1, 2]",
        "{a: 1}",
        "99999999999999999999999",
        "1%",
        "101%",
        "1x",
        "30d",
        "31d",
        "auto",
        "SIGKILL",
        "\"{cr}\"",
        "\"[::1]:0\"",
        "canary",
        "rolling",
        "[100]",
        "[100, 50]",
        "{kind: canary}",
        "\"\\0\"",
        "Ä",
        "-",
    ]);
    (0..n, 0u8..3, value).prop_map(move |(at, how, v)| {
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i != at {
                out.push_str(line);
            } else if how == 0 {
                let cut = line.find(": ").map_or(line.len(), |c| c + 2);
                out.push_str(&line[..cut]);
                out.push_str(v);
            } else if how == 1 {
                continue;
            } else {
                out.push_str(line);
                out.push('\n');
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check_never_panics(&text);
    }

    #[test]
    fn yamlish_text_never_panics(text in yamlish()) {
        check_never_panics(&text);
    }

    #[test]
    fn mutated_files_never_panic(text in mutated_full()) {
        check_never_panics(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for d in services::lint(FILE, &bytes) {
            prop_assert!(d.line >= 1 && d.col >= 1);
        }
    }
}

fn check_never_panics(text: &str) {
    match services::parse(FILE, text) {
        Ok(f) => assert!(!f.services.is_empty()),
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in diags {
                assert!(
                    CODES.iter().any(|(c, _)| *c == d.code),
                    "unlisted code {}",
                    d.code
                );
                assert!(d.line >= 1 && d.col >= 1);
                let _ = d.render(Some(text));
            }
        }
    }
}

#[test]
fn environments_change_replicas_strategy_and_env_per_environment() {
    let f = services::parse(
        FILE,
        "services:\n  web:\n    run: ./web\n    replicas: 2\n    env: {MODE: base, KEEP: yes}\n    environments:\n      production:\n        replicas: 4\n        strategy: {kind: canary, steps: [25, 100]}\n        env: {MODE: prod}\n      review: {replicas: 1, resources: {open-files: 256}}\n  worker:\n    run: ./worker\n",
    )
    .unwrap();
    let prod = f.for_environment("production");
    assert!(prod.overrides.is_empty());
    let web = &prod.services["web"];
    assert_eq!(web.replicas, 4);
    let spec::Strategy::Canary(c) = &web.strategy else {
        panic!("production's web is canary: {:?}", web.strategy)
    };
    assert_eq!(
        c.steps.iter().map(|s| s.weight).collect::<Vec<_>>(),
        [25, 100]
    );
    assert_eq!(web.env["MODE"], "prod");
    assert_eq!(web.env["KEEP"], "yes");
    assert_eq!(prod.services["worker"], f.services["worker"]);

    // Environments without changes run the service as declared.
    let staging = f.for_environment("staging");
    assert_eq!(staging.services["web"], f.services["web"]);
    assert!(matches!(
        staging.services["web"].strategy,
        spec::Strategy::BlueGreen { .. }
    ));

    // A review environment takes the `review` changes.
    let review = f.for_environment("review-7");
    assert_eq!(review.services["web"].replicas, 1);
    assert_eq!(review.services["web"].resources.open_files, Some(256));
}

#[test]
fn the_worked_example_of_the_docs_parses() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/services.md"),
    )
    .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = doc[start..].find("```").expect("the end of the block");
    let f = services::parse(FILE, &doc[start..start + len]).unwrap();
    assert_eq!(
        f.services.keys().map(String::as_str).collect::<Vec<_>>(),
        ["web", "worker"]
    );
    let spec::Strategy::Canary(c) = &f.services["web"].strategy else {
        panic!("web is canary")
    };
    assert_eq!(c.steps[0].pause_ms, 60_000);
    assert_eq!(c.sticky, Some(Sticky::Cookie("session".into())));
}
