//! Release phase tests on both databases (one module per area).

mod releases;
mod schema;
