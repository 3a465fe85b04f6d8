//! `ouro release ...`: releases on a running server. (Minimal on this branch: the promotion
//! commands; the merger adds list/show/create/notes/verify beside them.)

use clap::Subcommand;

use crate::release_promote::{self, ApproveArgs, PromoteArgs};

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Request the promotion of a published release to an environment; prints its state and gates.
    Promote(PromoteArgs),
    /// Approve (or with --reject, reject) a requested promotion, with an optional comment.
    Approve(ApproveArgs),
}

pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Promote(a) => release_promote::promote(a).await,
        ReleaseCommand::Approve(a) => release_promote::approve(a).await,
    }
}
