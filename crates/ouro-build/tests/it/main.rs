//! Integration tests of ouro-build.

mod exec;
mod expr;
mod logs;
mod mask;
mod matrix;
