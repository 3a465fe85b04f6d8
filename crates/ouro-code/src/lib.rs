//! Code: hosted git repositories. Projects own bare repositories stored in the data dir
//! (`DATA_DIR/repos/<project_id>/<repo_id>.git`), created empty or imported with the git CLI;
//! the server serves them over smart HTTP through `git http-backend`. After a push this crate
//! compares the refs before and after and appends one `code.pushed` event per moved ref, with the
//! new commits read by gix.

pub mod advertise;
pub mod branch_rules;
pub mod browse;
pub mod check;
pub mod cr;
pub mod cr_comments;
pub mod cr_meta;
pub mod diff;
pub mod git;
pub mod glob;
pub mod hook;
pub mod index;
pub mod migrations;
pub mod mirror;
pub mod push;
pub mod push_rules;
pub mod repos;
pub mod secrets;

pub use migrations::MIGRATIONS;
