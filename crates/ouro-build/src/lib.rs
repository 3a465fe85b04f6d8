//! Ouro's Build phase: pipelines as code. This crate holds the domain logic and knows nothing of
//! HTTP: the pipeline file model and its parser with diagnostics (`pipeline`, `check`, `yaml`,
//! `diag`), the expression language used by `${{ ... }}` and `if:` (`expr`), matrix expansion
//! (`matrix`), run planning (`plan`) and the local scheduler (`local`); job executors (`exec`), secret masking (`mask`) the job log store (`logs`) and
//! how logs are shown (`logview`).

pub mod artifacts;
pub mod blobs;
pub mod blobs_s3;
pub mod cache;
pub mod check;
pub mod diag;
pub mod exec;
pub mod expr;
pub mod local;
pub mod logs;
pub mod logview;
pub mod mask;
pub mod matrix;
mod migrations;
pub mod pipeline;
pub mod plan;
pub mod rerun;
pub mod runner;
pub mod runs;
pub mod schedule;
pub mod secrets;
#[doc(hidden)]
pub mod testing;
pub mod triggers;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use migrations::MIGRATIONS;
pub use pipeline::{Pipeline, lint, parse};
