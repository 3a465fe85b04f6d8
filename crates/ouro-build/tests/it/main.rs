//! Integration tests of ouro-build.

mod expr;
mod logs;
mod mask;
mod matrix;
