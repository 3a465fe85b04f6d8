//! Code: hosted git repositories. Projects own bare repositories stored in the data dir
//! (`DATA_DIR/repos/<project_id>/<repo_id>.git`), created empty or imported with the git CLI;
//! the server serves them over smart HTTP through `git http-backend`. After a push this crate
//! compares the refs before and after and appends one `code.pushed` event per moved ref, with the
//! new commits read by gix.

pub mod browse;
pub mod diff;
pub mod git;
pub mod migrations;
pub mod push;
pub mod repos;

pub use migrations::MIGRATIONS;
