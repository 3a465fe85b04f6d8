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

/// A step that prints the network interfaces of its own namespace (`/proc/net/dev`):
/// `interfaces: lo ` where the job has no network.
const PRINT_INTERFACES: &str = r#"echo "interfaces: $(awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | tr '\n' ' ')""#;
