//! The `ouro` binary as users run it: real processes, real signals.

mod build_e2e;
mod cli;
mod cr;
mod faults;
mod items;
mod lint;
mod pipeline;
mod release_promote;
mod release_verify;
mod run;
mod runner;
mod served;
mod test_report;
mod vars;
