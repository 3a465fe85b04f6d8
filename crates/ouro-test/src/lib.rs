//! Ouro's Test phase: turns the reports test tools already write (JUnit XML from many producers,
//! Cobertura and LCOV coverage) into one model (`model`), and keeps what the loop needs from them:
//! history per test, flaky tests, quarantine and quality gates. Knows nothing of HTTP.

pub mod flaky;
pub mod gate;
pub mod hook;
pub mod migrations;
pub mod model;
pub mod parse;
pub mod results;
pub mod summary;

pub use migrations::MIGRATIONS;
