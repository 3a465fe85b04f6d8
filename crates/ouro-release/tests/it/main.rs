//! Release phase tests on both databases (one module per area).

mod bundle;
mod conventional;
mod environments;
mod gates;
mod notes;
mod promotions;
mod releases;
mod schema;
mod settings;
mod support;
mod version;
