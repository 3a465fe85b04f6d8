//! `ouro release promote VERSION --env E` and `ouro release approve PROMOTION_ID [--reject]
//! [--comment C]`: promotion requests and decisions through the HTTP API of a running server.

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use crate::items::{Client, Remote, enc, print};

#[derive(Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    remote: Remote,
    /// The published release's version.
    version: String,
    /// The environment to promote it to.
    #[arg(long = "env")]
    env: String,
}

#[derive(Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    remote: Remote,
    /// The promotion's id (printed by `ouro release promote`).
    id: i64,
    /// Reject instead of approving.
    #[arg(long)]
    reject: bool,
    /// Why (up to 2000 characters).
    #[arg(long)]
    comment: Option<String>,
}

/// `promotion 3: 1.2.0 -> staging requested` and one line per gate and decision.
fn summary(v: &Value) -> String {
    let mut out = format!(
        "promotion {}: {} -> {} {}",
        v["id"],
        v["release"].as_str().unwrap_or("?"),
        v["environment"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?")
    );
    if let Some(r) = v["reason"].as_str() {
        out.push_str(&format!(" ({r})"));
    }
    for g in v["gates"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {:<8} {}: {}",
            g["status"].as_str().unwrap_or("?"),
            g["name"].as_str().unwrap_or("?"),
            g["detail"].as_str().unwrap_or("")
        ));
    }
    for a in v["approvals"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {} by {} at {}{}",
            a["decision"].as_str().unwrap_or("?"),
            a["user"].as_str().unwrap_or("?"),
            a["at"].as_str().unwrap_or("?"),
            a["comment"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    out
}

pub async fn promote(a: PromoteArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!(
        "/api/v1/projects/{}/releases/{}/promotions",
        enc(&a.remote.project),
        enc(&a.version)
    );
    let v = c
        .call(Method::POST, &path, Some(json!({"environment": a.env})))
        .await?;
    print(a.remote.json, &v, summary);
    Ok(())
}

pub async fn approve(a: ApproveArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!(
        "/api/v1/projects/{}/promotions/{}/{}",
        enc(&a.remote.project),
        a.id,
        if a.reject { "reject" } else { "approve" }
    );
    let v = c
        .call(
            Method::POST,
            &path,
            Some(json!({"comment": a.comment.unwrap_or_default()})),
        )
        .await?;
    print(a.remote.json, &v, summary);
    Ok(())
}
