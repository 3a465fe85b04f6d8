//! Integration tests of ouro-build: the pipeline file parser (the model, every diagnostic code,
//! rendered snapshots, budgets, property tests, the committed JSON Schema), the expression
//! language, matrix expansion, the executors, secret masking and the log store.

mod artifacts;
mod blobs;
mod blobs_s3;
mod codes;
mod exec;
mod expr;
mod local;
mod logs;
mod logview;
mod mask;
mod matrix;
mod model;
mod plan;
mod props;
mod render;
mod schedule;
mod schema;

use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
