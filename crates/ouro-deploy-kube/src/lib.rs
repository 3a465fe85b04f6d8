//! Ouro's Kubernetes deploy target: each version of a service is a `Deployment`
//! (`<service>-<version slug>`) and each service in an environment a `Service` whose selector
//! is switched for blue-green, or spans both versions for a canary (the replica ratio splits
//! the traffic). [`manifests`] builds the objects (pure functions), [`KubeTarget`] implements
//! [`ouro_deploy::target::Target`] against the API server through `kube`.
//!
//! A crate of its own so that everyday builds of `ouro-deploy` do not compile k8s-openapi.

pub mod manifests;
pub mod names;
mod projects;
pub mod settings;
mod target;

pub use projects::KubeTargets;
pub use settings::KubeSettings;
pub use target::KubeTarget;

use ouro_deploy::target::TargetError;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes target settings: {0}")]
    Settings(String),
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Refused(String),
}

/// A client for `config`. Installs rustls' ring provider as the process default first when
/// none is installed: kube-client needs one, and a binary that also enables aws-lc-rs (as
/// Ouro's other crates do) has none.
pub fn client(config: kube::Config) -> Result<kube::Client, KubeError> {
    // An error means a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(kube::Client::try_from(config)?)
}

/// A client configured as kubectl would be: in-cluster service account, else `KUBECONFIG` or
/// `~/.kube/config`.
pub async fn client_from_environment() -> Result<kube::Client, KubeError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| KubeError::Settings(format!("no cluster configuration: {e}")))?;
    client(config)
}

impl From<KubeError> for TargetError {
    fn from(e: KubeError) -> Self {
        TargetError::Other(e.to_string())
    }
}
