//! Integration tests of ouro-build: the pipeline file parser (the model, every diagnostic code,
//! rendered snapshots, budgets, property tests, the committed JSON Schema), the expression
//! language and matrix expansion.

mod codes;
mod expr;
mod matrix;
mod model;
mod props;
mod render;
mod schema;

use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
