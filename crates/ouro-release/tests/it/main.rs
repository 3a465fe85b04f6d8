//! Release phase tests on both databases (one module per area).

mod conventional;
mod notes;
mod releases;
mod schema;
mod settings;
mod version;
