//! Deploy's integration tests: one binary, a module per area.

mod local;
mod proxy;
mod proxy_raw;
mod records;
mod rolling;
mod services;
mod split;
mod strategies;
