//! `[deploy.kubernetes]`: how Ouro's services become objects on a cluster.

use serde::{Deserialize, Serialize};

use crate::KubeError;
use crate::names::slug;

/// The Kubernetes target's settings. Every field has a default except `ouro_url` in practice
/// (the pods download the release bundle from it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeSettings {
    /// Namespace per environment; `{project}` and `{environment}` are replaced by their slugs.
    /// It must contain `{environment}`: object names repeat across environments.
    pub namespace: String,
    /// Base image the service runs in (it needs `sh`; `setsid` is used when present).
    pub image: String,
    /// Image of the init container that fetches the bundle (needs `sh`, `curl` or `wget`,
    /// `zstd` and `tar`); default: `image`.
    pub init_image: Option<String>,
    /// `imagePullPolicy` of both containers (none: Kubernetes' default).
    pub image_pull_policy: Option<String>,
    /// Ouro's URL as the cluster reaches it; bundles come from
    /// `{ouro_url}/api/v1/projects/{project}/releases/{version}/bundle`.
    pub ouro_url: String,
    /// A Secret in the namespace whose key `token` holds an Ouro API token with read access to
    /// the project (none: the bundle URL is fetched without a token).
    pub bundle_token_secret: Option<String>,
    /// The port a replica listens on when the service says `port: auto` (`PORT` is set to it).
    pub container_port: u16,
    /// The Service's port.
    pub service_port: u16,
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// How often `wait_ready` reads a Deployment's status.
    pub poll_interval_ms: u64,
    /// How long a drain waits for endpoint removal to reach every node (capped by the
    /// service's drain timeout); the pods then get their termination grace period.
    pub drain_wait_ms: u64,
    /// How long `route` waits for a scaled-up Deployment before it changes the traffic.
    pub scale_timeout_ms: u64,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            namespace: "ouro-{project}-{environment}".into(),
            image: "debian:stable-slim".into(),
            init_image: None,
            image_pull_policy: None,
            ouro_url: "http://ouro.ouro.svc.cluster.local:8080".into(),
            bundle_token_secret: None,
            container_port: 8080,
            service_port: 80,
            field_manager: "ouro".into(),
            poll_interval_ms: 1000,
            drain_wait_ms: 5000,
            scale_timeout_ms: 300_000,
        }
    }
}

impl KubeSettings {
    /// Refuses settings that would produce clashing or invalid objects.
    pub fn check(&self) -> Result<(), KubeError> {
        if !self.namespace.contains("{environment}") {
            return Err(KubeError::Settings(
                "namespace must contain {environment}: every environment needs its own namespace"
                    .into(),
            ));
        }
        if self.image.trim().is_empty() {
            return Err(KubeError::Settings("image must not be empty".into()));
        }
        if self.container_port == 0 || self.service_port == 0 {
            return Err(KubeError::Settings("ports must not be 0".into()));
        }
        if self.field_manager.is_empty() {
            return Err(KubeError::Settings(
                "field_manager must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The namespace of a project's environment.
    pub fn namespace_for(&self, project: &str, environment: &str) -> String {
        let ns = self
            .namespace
            .replace("{project}", &slug(project))
            .replace("{environment}", &slug(environment));
        slug(&ns)
    }

    /// The URL a pod downloads a release's bundle from.
    pub fn bundle_url(&self, project: &str, version: &str) -> String {
        format!(
            "{}/api/v1/projects/{}/releases/{}/bundle",
            self.ouro_url.trim_end_matches('/'),
            project,
            version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_per_environment_and_valid() {
        let s = KubeSettings::default();
        assert!(s.check().is_ok());
        assert_eq!(s.namespace_for("Shop", "review-12"), "ouro-shop-review-12");
        let shared = KubeSettings {
            namespace: "apps".into(),
            ..KubeSettings::default()
        };
        assert!(matches!(shared.check(), Err(KubeError::Settings(_))));
        assert_eq!(
            s.bundle_url("shop", "1.0.0"),
            "http://ouro.ouro.svc.cluster.local:8080/api/v1/projects/shop/releases/1.0.0/bundle"
        );
    }
}
