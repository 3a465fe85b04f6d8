//! Deploy's integration tests: one binary, a module per area.

mod local;
mod split;
