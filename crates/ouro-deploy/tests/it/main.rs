//! Deploy's integration tests: one binary, a module per area.

mod records;
mod services;
mod proxy;
mod local;
mod split;
mod strategies;
