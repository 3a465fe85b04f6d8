//! Plan: work items (epics, features, stories, tasks, bugs, incidents, feedback), their types and
//! workflows, project-scoped keys (`DEMO-42`), comments, watchers and history from the ledger.

pub mod items;
pub mod migrations;
pub mod workflow;

pub use migrations::MIGRATIONS;
