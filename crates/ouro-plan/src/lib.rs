//! Ouro's Plan phase: work items, backlog, boards, sprints.

pub mod markdown;
pub mod query;
pub mod rank;
pub mod refs;
