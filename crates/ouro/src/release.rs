//! `ouro release ...`: releases. `verify` works offline (see release_verify.rs); the other
//! commands talk to a running server (needs --token or OURO_TOKEN).

use clap::Subcommand;

use crate::release_cli::{self, CreateArgs, ListArgs, NotesArgs, PublishArgs, ShowArgs};
use crate::release_promote::{self, ApproveArgs, PromoteArgs};
use crate::release_verify;

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// List the project's releases, newest first.
    List(ListArgs),
    /// Show one release: state, tag, bump and artifacts.
    Show(ShowArgs),
    /// Create a draft release from a successful pipeline run (version computed unless given).
    Create(CreateArgs),
    /// Print a release's notes, or replace a draft's notes with `--set FILE`.
    Notes(NotesArgs),
    /// Publish a draft: build its signed bundle, create its tag, make it immutable.
    Publish(PublishArgs),
    /// Check a release bundle offline: exit 0 and print `ok` when it is intact, 1 naming the
    /// file that does not match otherwise, 2 when it cannot be read.
    Verify(release_verify::VerifyArgs),
    /// Request the promotion of a published release to an environment; prints its state and gates.
    Promote(PromoteArgs),
    /// Approve (or with --reject, reject) a requested promotion, with an optional comment.
    Approve(ApproveArgs),
}

pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::List(a) => release_cli::list(a).await,
        ReleaseCommand::Show(a) => release_cli::show(a).await,
        ReleaseCommand::Create(a) => release_cli::create(a).await,
        ReleaseCommand::Notes(a) => release_cli::notes(a).await,
        ReleaseCommand::Publish(a) => release_cli::publish(a).await,
        ReleaseCommand::Promote(a) => release_promote::promote(a).await,
        ReleaseCommand::Approve(a) => release_promote::approve(a).await,
        ReleaseCommand::Verify(_) => unreachable!("verify runs before the runtime starts"),
    }
}
