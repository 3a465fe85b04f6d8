//! Deploy's integration tests: one binary, a module per area.

mod services;
mod split;
