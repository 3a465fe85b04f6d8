//! Release phase tests on both databases (one module per area).

mod bundle;
mod schema;
