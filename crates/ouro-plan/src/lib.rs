//! Plan: work items (epics, features, stories, tasks, bugs, incidents, feedback), their types and
//! workflows, project-scoped keys (`DEMO-42`), comments, watchers and history from the ledger;
//! and the pure building blocks of planning: backlog ranks, the item query language and safe
//! Markdown. The item reference parser every phase uses lives in `ouro_core::refs`.

pub mod attachments;
pub mod board;
pub mod charts;
pub mod config;
pub mod csv;
pub mod fields;
pub mod intake;
pub mod items;
pub mod links;
pub mod markdown;
pub mod migrations;
pub mod notifications;
pub mod query;
pub mod rank;
pub mod roadmap;
pub mod rules;
pub mod saved_queries;
pub mod sprints;
pub mod trail;
pub mod workflow;

pub use migrations::MIGRATIONS;
