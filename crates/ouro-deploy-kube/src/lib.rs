//! Ouro's Kubernetes deploy target: each version of a service is a `Deployment`
//! (`<service>-<version slug>`) and each service in an environment a `Service` whose selector
//! is switched for blue-green, or spans both versions for a canary (the replica ratio splits
//! the traffic). [`manifests`] builds the objects (pure functions), [`KubeTarget`] implements
//! [`ouro_deploy::target::Target`] against the API server through `kube`.
//!
//! A crate of its own so that everyday builds of `ouro-deploy` do not compile k8s-openapi.

pub mod manifests;
pub mod names;
pub mod settings;
mod target;

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

impl From<KubeError> for TargetError {
    fn from(e: KubeError) -> Self {
        TargetError::Other(e.to_string())
    }
}
