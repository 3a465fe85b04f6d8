//! The objects a version of a service becomes: pure functions, no cluster needed.
//!
//! - a `Deployment` per version (`<service>-<version slug>`), whose pods fetch the release
//!   bundle in an init container and run the service's `run` command from its files;
//! - a `Secret` per version with the environment's variables and secrets (kept out of the
//!   Deployment, which anyone with read access to Deployments can see);
//! - one `Service` per service and environment, whose selector names the live version
//!   (blue-green) or every version (canary: the replica ratio splits the traffic).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretEnvSource, SecretKeySelector, Service as KubeService,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ouro_deploy::spec::{Port, Probe as OuroProbe, ProbeCheck, Service};

use crate::names::{
    ANNOTATION_VERSION, LABEL_ENVIRONMENT, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PROJECT,
    LABEL_VERSION, deployment_name, env_secret_name, slug,
};
use crate::settings::KubeSettings;

/// Where the init container unpacks the bundle (an emptyDir shared with the service).
pub const BUNDLE_DIR: &str = "/ouro/bundle";
/// The named container port probes and the Service point at.
pub const PORT_NAME: &str = "http";

const RUN_SCRIPT: &str = include_str!("scripts/run.sh");
const FETCH_SCRIPT: &str = include_str!("scripts/fetch.sh");

/// Environment variables Ouro sets itself; the service's `env` cannot override them.
const RESERVED_ENV: &[&str] = &[
    "PORT",
    "OURO_SERVICE",
    "OURO_VERSION",
    "OURO_ENVIRONMENT",
    "OURO_PROJECT",
    "OURO_REPLICA",
    "OURO_RUN",
    "OURO_STOP_SIGNAL",
];

/// One version of one service in one environment, as the manifests need it.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub project: &'a str,
    pub environment: &'a str,
    pub service: &'a Service,
    pub version: &'a str,
    /// Names of the environment's variables and secrets (their values go into the Secret):
    /// the service's own `env` gives way to them.
    pub env_names: &'a [String],
}

/// Which pods the Service sends traffic to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Only this version's pods (blue-green, or a finished canary).
    Version(&'a str),
    /// Every version's pods of the service in the environment (canary: the number of ready
    /// pods per version is the split).
    AllVersions,
}

/// The port a replica listens on.
pub fn container_port(settings: &KubeSettings, service: &Service) -> u16 {
    match service.port {
        Port::From(p) if p != 0 => p,
        _ => settings.container_port,
    }
}

/// Labels every pod of the service in the environment carries (the canary Service selector).
pub fn service_labels(project: &str, environment: &str, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), slug(service)),
        (LABEL_ENVIRONMENT.to_string(), slug(environment)),
        (LABEL_PROJECT.to_string(), slug(project)),
    ])
}

/// Labels of one version's pods (the Deployment's selector and the blue-green Service selector).
pub fn version_labels(
    project: &str,
    environment: &str,
    service: &str,
    version: &str,
) -> BTreeMap<String, String> {
    let mut labels = service_labels(project, environment, service);
    labels.insert(LABEL_VERSION.to_string(), slug(version));
    labels
}

/// A label selector string (`k=v,k=v`) for list calls.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn metadata(
    name: String,
    namespace: &str,
    mut labels: BTreeMap<String, String>,
    version: Option<&str>,
) -> ObjectMeta {
    labels.insert(LABEL_MANAGED_BY.to_string(), "ouro".to_string());
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        annotations: version
            .map(|v| BTreeMap::from([(ANNOTATION_VERSION.to_string(), v.to_string())])),
        ..ObjectMeta::default()
    }
}

/// The main container's entry point: runs `$OURO_RUN` in its own session and turns the
/// kubelet's SIGTERM into the service's stop signal for that process group.
pub fn run_script() -> String {
    script(RUN_SCRIPT)
}

/// The init container's script: downloads `$OURO_BUNDLE_URL` (with `$OURO_BUNDLE_TOKEN` as a
/// bearer token when set) and unpacks it into `$OURO_BUNDLE_DIR`.
pub fn fetch_script() -> String {
    script(FETCH_SCRIPT)
}

/// Drops the comment lines of an embedded script (they explain it here, not in the manifest).
fn script(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

/// Whole seconds, rounded up, at least `min` (Kubernetes probe fields are seconds).
fn seconds(ms: u64, min: i32) -> i32 {
    let s = ms.div_ceil(1000);
    i32::try_from(s).unwrap_or(i32::MAX).max(min)
}

/// A `spec::Probe` as a Kubernetes probe. Liveness probes must have `successThreshold` 1.
pub fn probe(p: &OuroProbe, liveness: bool) -> Probe {
    let port = IntOrString::String(PORT_NAME.to_string());
    let mut out = Probe {
        period_seconds: Some(seconds(p.interval_ms, 1)),
        timeout_seconds: Some(seconds(p.timeout_ms, 1)),
        success_threshold: Some(if liveness {
            1
        } else {
            i32::try_from(p.success_threshold.max(1)).unwrap_or(i32::MAX)
        }),
        failure_threshold: Some(i32::try_from(p.failure_threshold.max(1)).unwrap_or(i32::MAX)),
        // Ouro's start period ignores failures; Kubernetes' nearest field delays the first probe.
        initial_delay_seconds: Some(seconds(p.start_period_ms, 0)),
        ..Probe::default()
    };
    match &p.check {
        ProbeCheck::Http { path } => {
            out.http_get = Some(HTTPGetAction {
                path: Some(path.clone()),
                port,
                ..HTTPGetAction::default()
            })
        }
        ProbeCheck::Tcp => out.tcp_socket = Some(TCPSocketAction { host: None, port }),
        ProbeCheck::Command { run } => {
            out.exec = Some(ExecAction {
                command: Some(vec!["/bin/sh".into(), "-c".into(), run.clone()]),
            })
        }
    }
    out
}

/// The version's Deployment with `replicas` pods.
pub fn deployment(settings: &KubeSettings, w: &Workload<'_>, replicas: u32) -> Deployment {
    let service = w.service;
    let namespace = settings.namespace_for(w.project, w.environment);
    let name = deployment_name(&service.name, w.version);
    let labels = version_labels(w.project, w.environment, &service.name, w.version);
    let port = container_port(settings, service);
    let volume = "bundle";
    let mount = VolumeMount {
        name: volume.to_string(),
        mount_path: BUNDLE_DIR.to_string(),
        ..VolumeMount::default()
    };

    let mut env_vars = vec![
        env("PORT", &port.to_string()),
        env("OURO_PROJECT", w.project),
        env("OURO_SERVICE", &service.name),
        env("OURO_VERSION", w.version),
        env("OURO_ENVIRONMENT", w.environment),
        EnvVar {
            name: "OURO_REPLICA".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        env("OURO_RUN", &service.run),
        env("OURO_STOP_SIGNAL", &service.stop.signal),
    ];
    // `env` beats `envFrom` in Kubernetes, so the service's own variables that the environment
    // also sets are left out: the environment's value (in the Secret) wins, as on the local target.
    for (k, v) in &service.env {
        if !RESERVED_ENV.contains(&k.as_str()) && !w.env_names.iter().any(|n| n == k) {
            env_vars.push(env(k, v));
        }
    }

    let mut limits = BTreeMap::new();
    if let Some(bytes) = service.resources.memory_bytes {
        limits.insert("memory".to_string(), Quantity(bytes.to_string()));
    }

    let pull = settings.image_pull_policy.clone();
    let main = Container {
        name: "app".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: pull.clone(),
        command: Some(vec!["/bin/sh".into(), "-c".into(), run_script()]),
        working_dir: Some(format!("{BUNDLE_DIR}/files")),
        env: Some(env_vars),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: env_secret_name(&service.name, w.version),
                optional: Some(true),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: service.health.readiness.as_ref().map(|p| probe(p, false)),
        liveness_probe: service.health.liveness.as_ref().map(|p| probe(p, true)),
        resources: (!limits.is_empty()).then(|| ResourceRequirements {
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![mount.clone()]),
        ..Container::default()
    };

    let mut fetch_env = vec![
        env(
            "OURO_BUNDLE_URL",
            &settings.bundle_url(w.project, w.version),
        ),
        env("OURO_BUNDLE_DIR", BUNDLE_DIR),
    ];
    if let Some(secret) = &settings.bundle_token_secret {
        fetch_env.push(EnvVar {
            name: "OURO_BUNDLE_TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: "token".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let fetch = Container {
        name: "fetch-bundle".into(),
        image: Some(
            settings
                .init_image
                .clone()
                .unwrap_or_else(|| settings.image.clone()),
        ),
        image_pull_policy: pull,
        command: Some(vec!["/bin/sh".into(), "-c".into(), fetch_script()]),
        env: Some(fetch_env),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    };

    let template_meta = metadata(name.clone(), &namespace, labels.clone(), Some(w.version));
    Deployment {
        metadata: metadata(name, &namespace, labels.clone(), Some(w.version)),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    name: None,
                    namespace: None,
                    ..template_meta
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![fetch]),
                    containers: vec![main],
                    volumes: Some(vec![Volume {
                        name: volume.to_string(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    termination_grace_period_seconds: Some(
                        i64::try_from(service.stop.grace_ms.div_ceil(1000)).unwrap_or(i64::MAX),
                    ),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Secret with the environment's variables and secrets for one version.
pub fn env_secret(
    settings: &KubeSettings,
    w: &Workload<'_>,
    env: &BTreeMap<String, String>,
) -> Secret {
    let namespace = settings.namespace_for(w.project, w.environment);
    let labels = version_labels(w.project, w.environment, &w.service.name, w.version);
    Secret {
        metadata: metadata(
            env_secret_name(&w.service.name, w.version),
            &namespace,
            labels,
            Some(w.version),
        ),
        // `data`, not `stringData`: with server-side apply a key dropped from `stringData`
        // would linger in `data`.
        data: Some(
            env.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The service's Service in the environment, selecting as `selection` says.
pub fn service(
    settings: &KubeSettings,
    project: &str,
    environment: &str,
    service: &Service,
    selection: Selection<'_>,
) -> KubeService {
    let namespace = settings.namespace_for(project, environment);
    let selector = match selection {
        Selection::Version(v) => version_labels(project, environment, &service.name, v),
        Selection::AllVersions => service_labels(project, environment, &service.name),
    };
    KubeService {
        metadata: metadata(
            slug(&service.name),
            &namespace,
            service_labels(project, environment, &service.name),
            None,
        ),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(settings.service_port),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Replicas of the stable and the canary version so that the canary's share of the pods is
/// as close to `weight` percent as `total` pods allow (at least one pod each side while
/// 0 < weight < 100, so a service with one replica runs two pods during a canary).
pub fn canary_replicas(total: u32, weight: u8) -> (u32, u32) {
    let weight = u32::from(weight.min(100));
    match weight {
        0 => (total, 0),
        100 => (0, total),
        _ => {
            let total = total.max(2);
            // u64: no overflow for any replica count.
            let share = (u64::from(total) * u64::from(weight) + 50) / 100;
            let canary = u32::try_from(share).unwrap_or(total).clamp(1, total - 1);
            (total - canary, canary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canary_replicas;

    #[test]
    fn canary_shares_follow_the_weight_within_one_pod() {
        assert_eq!(canary_replicas(4, 25), (3, 1));
        assert_eq!(canary_replicas(4, 50), (2, 2));
        assert_eq!(canary_replicas(10, 10), (9, 1));
        assert_eq!(canary_replicas(10, 25), (7, 3));
        // One replica: a canary still needs a pod on each side.
        assert_eq!(canary_replicas(1, 10), (1, 1));
        assert_eq!(canary_replicas(3, 90), (1, 2));
        assert_eq!(canary_replicas(3, 0), (3, 0));
        assert_eq!(canary_replicas(3, 100), (0, 3));
        assert_eq!(
            canary_replicas(u32::MAX, 50),
            (u32::MAX / 2, u32::MAX / 2 + 1)
        );
        for total in 1..20 {
            for w in 1..100u8 {
                let (s, c) = canary_replicas(total, w);
                assert!(s >= 1 && c >= 1, "{total} {w}");
                let share = f64::from(c) / f64::from(s + c) * 100.0;
                let step = 100.0 / f64::from(s + c);
                assert!((share - f64::from(w)).abs() <= step, "{total} {w}: {s}/{c}");
            }
        }
    }
}
