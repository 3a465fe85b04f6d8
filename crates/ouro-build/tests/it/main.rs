//! Integration tests of ouro-build.

mod expr;
mod matrix;
