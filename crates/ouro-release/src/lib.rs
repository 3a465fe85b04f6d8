//! Ouro's Release phase: turns a green pipeline run into a durable, auditable release (version,
//! tag, artifacts by content hash, notes, linked items, test summary), packs it into a signed
//! bundle, and decides how and when it may go to each environment. Knows nothing of HTTP.

pub mod bundle;
pub mod changes;
pub mod conventional;
pub mod environments;
pub mod gates;
pub mod migrations;
pub mod notes;
pub mod promotions;
pub mod releases;
pub mod settings;
pub mod signing;
pub mod version;

pub use migrations::MIGRATIONS;
