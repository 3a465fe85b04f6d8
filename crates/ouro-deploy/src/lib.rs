//! Ouro's Deploy phase: the services a release runs (`.ouro/services.yml`), the targets versions
//! run on (the local target: supervised processes behind the built-in proxy; Kubernetes), the
//! strategies that move traffic (recreate, rolling, blue-green, canary), deployments and
//! rollback. It knows nothing of HTTP routes of the API; the server wires it.

pub mod deployments;
pub mod engine;
pub mod local;
pub mod local_target;
pub mod migrations;
pub mod proxy;
pub mod services;
pub mod spec;
pub mod strategy;
pub mod target;
pub mod upstream;

pub use migrations::MIGRATIONS;
