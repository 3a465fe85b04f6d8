//! The Kubernetes target's integration tests: one binary, a module per area. No cluster is
//! involved: manifests are checked as data, the controller logic against a fake API server.

mod controller;
mod fake_api;
mod fixtures;
mod manifests;
mod scripts;
