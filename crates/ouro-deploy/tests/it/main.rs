//! Deploy's integration tests: one binary, a module per area.

mod local;
mod proxy;
mod records;
mod services;
mod split;
mod strategies;
