//! `ouro release ...`: releases. `verify` works offline (see release_verify.rs).

use clap::Subcommand;

use crate::release_verify;

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Check a release bundle offline: exit 0 and print `ok` when it is intact, 1 naming the
    /// file that does not match otherwise, 2 when it cannot be read.
    Verify(release_verify::VerifyArgs),
}

/// Runs an offline release command and returns the exit status.
pub fn run_offline(cmd: ReleaseCommand) -> i32 {
    match cmd {
        ReleaseCommand::Verify(args) => release_verify::run(args),
    }
}
