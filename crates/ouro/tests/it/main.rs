//! The `ouro` binary as users run it: real processes, real signals.

mod build_e2e;
mod cli;
mod cr;
mod items;
mod lint;
mod run;
mod runner;
mod served;
mod vars;
