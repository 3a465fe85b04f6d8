//! Deploy's integration tests: one binary, a module per area.

mod proxy;
mod split;
