//! Services the tests deploy: `web` (blue-green) and `api` (canary).

use std::collections::BTreeMap;

use ouro_deploy::spec::{
    Analysis, Canary, CanaryStep, Drain, Health, Port, Probe, ProbeCheck, Resources, Route,
    Service, Stop, Strategy,
};
use ouro_deploy_kube::KubeSettings;

pub fn settings() -> KubeSettings {
    KubeSettings {
        ouro_url: "https://ouro.example.com/".into(),
        bundle_token_secret: Some("ouro-bundle-token".into()),
        poll_interval_ms: 10,
        drain_wait_ms: 10,
        scale_timeout_ms: 10_000,
        ..KubeSettings::default()
    }
}

pub fn web() -> Service {
    Service {
        name: "web".into(),
        run: "exec ./bin/web --listen 0.0.0.0:$PORT".into(),
        port: Port::Auto,
        replicas: 2,
        health: Health {
            readiness: Some(Probe {
                check: ProbeCheck::Http {
                    path: "/healthz".into(),
                },
                interval_ms: 2_000,
                timeout_ms: 500,
                success_threshold: 2,
                failure_threshold: 3,
                start_period_ms: 5_000,
            }),
            liveness: Some(Probe {
                check: ProbeCheck::Tcp,
                interval_ms: 10_000,
                timeout_ms: 1_000,
                success_threshold: 3,
                failure_threshold: 5,
                start_period_ms: 0,
            }),
        },
        stop: Stop {
            signal: "TERM".into(),
            grace_ms: 20_000,
        },
        routes: BTreeMap::from([(
            "production".to_string(),
            Route {
                listen: None,
                host: Some("shop.example.com".into()),
            },
        )]),
        strategy: Strategy::BlueGreen {
            keep_warm_ms: 600_000,
        },
        drain: Drain::default(),
        resources: Resources {
            memory_bytes: Some(256 * 1024 * 1024),
            open_files: Some(4096),
            ..Resources::default()
        },
        env: BTreeMap::from([
            ("LOG_LEVEL".to_string(), "info".to_string()),
            (
                "DATABASE_URL".to_string(),
                "overridden-by-the-environment".to_string(),
            ),
        ]),
    }
}

pub fn api() -> Service {
    Service {
        name: "api".into(),
        run: "python3 -m api".into(),
        port: Port::From(9000),
        replicas: 4,
        health: Health {
            readiness: Some(Probe {
                check: ProbeCheck::Command {
                    run: "test -f /tmp/ready".into(),
                },
                interval_ms: 1_500,
                timeout_ms: 1_000,
                success_threshold: 1,
                failure_threshold: 2,
                start_period_ms: 2_500,
            }),
            liveness: None,
        },
        stop: Stop {
            signal: "INT".into(),
            grace_ms: 5_500,
        },
        routes: BTreeMap::new(),
        strategy: Strategy::Canary(Canary {
            steps: vec![
                CanaryStep {
                    weight: 25,
                    pause_ms: 60_000,
                },
                CanaryStep {
                    weight: 50,
                    pause_ms: 60_000,
                },
                CanaryStep {
                    weight: 100,
                    pause_ms: 0,
                },
            ],
            sticky: None,
            analysis: Analysis::default(),
            keep_warm_ms: 60_000,
        }),
        drain: Drain::default(),
        resources: Resources::default(),
        env: BTreeMap::new(),
    }
}

/// The environment's variables and secrets of the tests.
pub fn environment_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DATABASE_URL".to_string(), "postgres://db/shop".to_string()),
        ("API_KEY".to_string(), "s3cret".to_string()),
    ])
}
