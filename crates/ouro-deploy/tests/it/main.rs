//! Deploy's integration tests: one binary, a module per area.

mod records;
mod services;
mod split;
mod strategies;
