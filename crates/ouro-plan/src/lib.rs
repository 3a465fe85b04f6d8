//! Plan: work items (epics, features, stories, tasks, bugs, incidents, feedback), their types and
//! workflows, project-scoped keys (`DEMO-42`), comments, watchers and history from the ledger;
//! and the pure building blocks the other phases share: backlog ranks, the item query language,
//! the item reference parser and safe Markdown.

pub mod items;
pub mod markdown;
pub mod migrations;
pub mod query;
pub mod rank;
pub mod refs;
pub mod workflow;

pub use migrations::MIGRATIONS;
