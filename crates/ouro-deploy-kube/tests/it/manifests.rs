//! The generated objects: snapshots (reviewed once, then any change shows in the diff), a
//! round trip through k8s-openapi's types, and the API server's validation rules that the
//! types do not enforce (names, labels, selectors, port references, probe rules).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Probe, Secret, Service as KubeService};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ouro_deploy_kube::manifests::{self, Selection, Workload};
use ouro_deploy_kube::names::{is_dns1123_label, is_label_value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fixtures::{api, environment_env, settings, web};

fn env_names() -> Vec<String> {
    environment_env().keys().cloned().collect()
}

/// Serialises, reads back through the k8s-openapi type and checks nothing was lost or added.
fn round_trip<T: Serialize + DeserializeOwned>(object: &T) -> serde_json::Value {
    let json = serde_json::to_value(object).expect("serialise");
    let text = serde_json::to_string(&json).expect("text");
    let back: T = serde_json::from_str(&text).expect("the object reads back as its type");
    assert_eq!(serde_json::to_value(&back).expect("serialise again"), json);
    json
}

fn check_labels(labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let name = k.rsplit('/').next().unwrap_or(k);
        assert!(name.len() <= 63 && !name.is_empty(), "label key {k}");
        assert!(is_label_value(v), "label {k}={v}");
    }
}

fn check_probe(p: &Probe, ports: &[String], liveness: bool) {
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
    ];
    assert_eq!(
        handlers.iter().filter(|h| **h).count(),
        1,
        "one handler: {p:?}"
    );
    let port = p
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(p.tcp_socket.as_ref().map(|t| &t.port));
    if let Some(IntOrString::String(name)) = port {
        assert!(
            ports.contains(name),
            "probe port {name} is a container port"
        );
    }
    for v in [
        p.period_seconds,
        p.timeout_seconds,
        p.success_threshold,
        p.failure_threshold,
    ] {
        assert!(v.unwrap_or(1) >= 1, "{p:?}");
    }
    assert!(p.initial_delay_seconds.unwrap_or(0) >= 0);
    if liveness {
        assert_eq!(
            p.success_threshold,
            Some(1),
            "liveness successThreshold must be 1"
        );
    }
}

fn check_container(c: &Container) -> Vec<String> {
    assert!(is_dns1123_label(&c.name), "container {}", c.name);
    let ports: Vec<String> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            assert!((1..=65535).contains(&p.container_port));
            p.name.clone()
        })
        .collect();
    for p in &ports {
        assert!(p.len() <= 15 && is_dns1123_label(p), "port name {p}");
    }
    for e in c.env.iter().flatten() {
        assert!(
            !e.name.is_empty()
                && !e.name.contains('=')
                && e.value.is_some() != e.value_from.is_some(),
            "env {e:?}"
        );
    }
    if let Some(p) = &c.readiness_probe {
        check_probe(p, &ports, false);
    }
    if let Some(p) = &c.liveness_probe {
        check_probe(p, &ports, true);
    }
    ports
}

/// The rules apps/v1 validation applies to a Deployment that the Rust types do not.
fn check_deployment(d: &Deployment) {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    assert!(is_dns1123_label(name), "name {name}");
    assert!(is_dns1123_label(
        d.metadata.namespace.as_deref().unwrap_or_default()
    ));
    let spec = d.spec.as_ref().expect("spec");
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("template labels");
    check_labels(&template_labels);
    check_labels(d.metadata.labels.as_ref().expect("labels"));
    let selector = spec.selector.match_labels.clone().expect("matchLabels");
    for (k, v) in &selector {
        assert_eq!(
            template_labels.get(k),
            Some(v),
            "selector {k} matches the template"
        );
    }
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let all = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter());
    let mut names = Vec::new();
    for c in all {
        check_container(c);
        names.push(c.name.clone());
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name.as_str()),
                "mount {} has a volume",
                m.name
            );
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2, "container names are distinct");
}

#[test]
fn blue_green_web_manifests() {
    let s = settings();
    let web = web();
    let names = env_names();
    let w = Workload {
        project: "shop",
        environment: "production",
        service: &web,
        version: "1.3.0-rc.1",
        env_names: &names,
    };
    let d = manifests::deployment(&s, &w, web.replicas);
    check_deployment(&d);
    assert_eq!(d.metadata.name.as_deref(), Some("web-1-3-0-rc-1"));
    assert_eq!(
        d.metadata.namespace.as_deref(),
        Some("ouro-shop-production")
    );
    insta::assert_json_snapshot!("web_deployment", round_trip(&d));

    let secret = manifests::env_secret(&s, &w, &environment_env());
    round_trip(&secret);
    let secret: Secret = serde_json::from_value(round_trip(&secret)).expect("secret");
    assert_eq!(secret.metadata.name.as_deref(), Some("web-1-3-0-rc-1-env"));
    insta::assert_json_snapshot!("web_env_secret", round_trip(&secret));

    let svc = manifests::service(
        &s,
        "shop",
        "production",
        &web,
        Selection::Version("1.3.0-rc.1"),
    );
    insta::assert_json_snapshot!("web_service_blue_green", round_trip(&svc));
    check_service_selects(&svc, &d);
}

#[test]
fn canary_api_manifests() {
    let s = settings();
    let api = api();
    let none: Vec<String> = Vec::new();
    let w = Workload {
        project: "shop",
        environment: "staging",
        service: &api,
        version: "2.0.0",
        env_names: &none,
    };
    let stable = Workload {
        version: "1.9.4",
        ..w
    };
    let (s_n, c_n) = manifests::canary_replicas(api.replicas, 25);
    let canary = manifests::deployment(&s, &w, c_n);
    let old = manifests::deployment(&s, &stable, s_n);
    check_deployment(&canary);
    check_deployment(&old);
    insta::assert_json_snapshot!("api_deployment_canary", round_trip(&canary));
    let svc = manifests::service(&s, "shop", "staging", &api, Selection::AllVersions);
    insta::assert_json_snapshot!("api_service_canary", round_trip(&svc));
    // The canary Service selects both versions' pods, nothing else distinguishes them.
    check_service_selects(&svc, &canary);
    check_service_selects(&svc, &old);
    let blue_green = manifests::service(&s, "shop", "staging", &api, Selection::Version("2.0.0"));
    check_service_selects(&blue_green, &canary);
    assert!(
        !selects(&blue_green, &old),
        "a version selector leaves the old version out"
    );
}

fn selects(svc: &KubeService, d: &Deployment) -> bool {
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Service picks the Deployment's pods and its target port is one of their ports.
fn check_service_selects(svc: &KubeService, d: &Deployment) {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    assert!(is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()));
    check_labels(
        svc.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .expect("selector"),
    );
    assert!(selects(svc, d), "the Service selects {:?}", d.metadata.name);
    let container = &d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod")
        .containers[0];
    let ports = check_container(container);
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
    {
        match p.target_port {
            Some(IntOrString::String(n)) => assert!(ports.contains(&n), "targetPort {n}"),
            other => panic!("targetPort should name the container port: {other:?}"),
        }
    }
}

#[test]
fn probes_map_to_kubernetes_fields() {
    let web = web();
    let readiness = manifests::probe(web.health.readiness.as_ref().expect("readiness"), false);
    assert_eq!(
        readiness.http_get.as_ref().and_then(|h| h.path.as_deref()),
        Some("/healthz")
    );
    assert_eq!(readiness.period_seconds, Some(2));
    // 500 ms rounds up to the smallest timeout Kubernetes has.
    assert_eq!(readiness.timeout_seconds, Some(1));
    assert_eq!(readiness.success_threshold, Some(2));
    assert_eq!(readiness.failure_threshold, Some(3));
    assert_eq!(readiness.initial_delay_seconds, Some(5));
    let liveness = manifests::probe(web.health.liveness.as_ref().expect("liveness"), true);
    assert!(liveness.tcp_socket.is_some());
    assert_eq!(liveness.success_threshold, Some(1));
    assert_eq!(liveness.failure_threshold, Some(5));
    let api = api();
    let command = manifests::probe(api.health.readiness.as_ref().expect("readiness"), false);
    let exec = command.exec.and_then(|e| e.command).expect("exec");
    assert_eq!(exec, ["/bin/sh", "-c", "test -f /tmp/ready"]);
    assert_eq!(command.period_seconds, Some(2));
    assert_eq!(command.initial_delay_seconds, Some(3));
}

#[test]
fn environment_values_win_over_the_service_env_and_stay_out_of_the_deployment() {
    let s = settings();
    let web = web();
    let names = env_names();
    let w = Workload {
        project: "shop",
        environment: "production",
        service: &web,
        version: "1.0.0",
        env_names: &names,
    };
    let d = manifests::deployment(&s, &w, 2);
    let text = serde_json::to_string(&d).expect("json");
    assert!(!text.contains("s3cret") && !text.contains("postgres://db/shop"));
    let c = &d
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers[0];
    let env: BTreeMap<String, Option<String>> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    // `env` beats `envFrom` on Kubernetes: the environment's DATABASE_URL must not be shadowed.
    assert!(!env.contains_key("DATABASE_URL"));
    assert_eq!(env.get("LOG_LEVEL"), Some(&Some("info".to_string())));
    assert_eq!(env.get("PORT"), Some(&Some("8080".to_string())));
    assert_eq!(env.get("OURO_VERSION"), Some(&Some("1.0.0".to_string())));
    let from = c.env_from.clone().unwrap_or_default();
    assert_eq!(
        from[0].secret_ref.as_ref().map(|r| r.name.as_str()),
        Some("web-1-0-0-env")
    );
}

#[test]
fn long_and_odd_versions_still_make_valid_objects() {
    let s = settings();
    let mut svc = web();
    svc.name = "checkout-payment-gateway-reconciliation-worker".into();
    let none = Vec::new();
    for version in [
        "1.2.0-rc.1",
        "1.2.0+build.2026.11.27.abcdef0123456789",
        "10.20.30-alpha.beta.gamma.delta.epsilon.zeta.eta.theta",
        "V1_final",
    ] {
        let w = Workload {
            project: "Shop_Main",
            environment: "review-1234",
            service: &svc,
            version,
            env_names: &none,
        };
        let d = manifests::deployment(&s, &w, 1);
        check_deployment(&d);
        assert_eq!(
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("ouro.dev/version")),
            Some(&version.to_string()),
            "the exact version survives in the annotation"
        );
        let svc_obj = manifests::service(
            &s,
            "Shop_Main",
            "review-1234",
            &svc,
            Selection::Version(version),
        );
        check_service_selects(&svc_obj, &d);
    }
}
