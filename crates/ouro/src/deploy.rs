//! `ouro deploy status|rollout|rollback --env E`: what runs in an environment, deploying a
//! release to it and rolling it back, through the HTTP API of a running server. With `--wait`,
//! rollout and rollback follow the deployment's steps until it ends and exit 1 unless it
//! succeeded.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::items::{Client, Remote, enc, print};

#[derive(Subcommand)]
pub enum DeployCommand {
    /// The live version, traffic split, replicas with their health and recent deployments.
    Status(StatusArgs),
    /// Deploy a published release to the environment with each service's strategy.
    Rollout(RolloutArgs),
    /// Put the environment's previous release back live.
    Rollback(RollbackArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    remote: Remote,
    #[arg(long = "env")]
    env: String,
}

#[derive(Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    remote: Remote,
    /// The published release's version.
    version: String,
    #[arg(long = "env")]
    env: String,
    /// Follow the deployment until it ends; exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    remote: Remote,
    #[arg(long = "env")]
    env: String,
    /// Follow the rollback until it ends; exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
}

pub async fn run(cmd: DeployCommand) -> anyhow::Result<()> {
    match cmd {
        DeployCommand::Status(a) => status(a).await,
        DeployCommand::Rollout(a) => {
            let c = Client::new(&a.remote)?;
            let path = format!(
                "/api/v1/projects/{}/environments/{}/deployments",
                enc(&a.remote.project),
                enc(&a.env)
            );
            let v = c
                .call(Method::POST, &path, Some(json!({"version": a.version})))
                .await?;
            follow(&c, &a.remote, v, a.wait).await
        }
        DeployCommand::Rollback(a) => {
            let c = Client::new(&a.remote)?;
            let path = format!(
                "/api/v1/projects/{}/environments/{}/rollback",
                enc(&a.remote.project),
                enc(&a.env)
            );
            let v = c.call(Method::POST, &path, None).await?;
            follow(&c, &a.remote, v, a.wait).await
        }
    }
}

/// `deployment 4: rollback 1.0.0 to staging (blue-green) succeeded in 120 ms` and its steps.
fn deployment_text(v: &Value) -> String {
    let mut out = format!(
        "deployment {}: {} {} to {} ({}) {}",
        v["id"],
        v["kind"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["environment"].as_str().unwrap_or("?"),
        v["strategy"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
    );
    if let Some(ms) = v["duration_ms"].as_i64() {
        out.push_str(&format!(" in {ms} ms"));
    }
    if let Some(r) = v["reason"].as_str() {
        out.push_str(&format!("\n  reason: {r}"));
    }
    for s in v["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {:>2}. {:<8} {:<9} {:<6} {:>6} ms  {}",
            s["seq"],
            s["service"].as_str().unwrap_or("?"),
            s["name"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["duration_ms"],
            s["detail"]
        ));
    }
    out
}

async fn follow(c: &Client, remote: &Remote, mut v: Value, wait: bool) -> anyhow::Result<()> {
    if wait {
        let path = format!(
            "/api/v1/projects/{}/deployments/{}",
            enc(&remote.project),
            v["id"]
        );
        while v["state"] == "running" {
            tokio::time::sleep(Duration::from_millis(250)).await;
            v = c.call(Method::GET, &path, None).await?;
        }
    }
    print(remote.json, &v, deployment_text);
    if wait && v["state"] != "succeeded" {
        bail!(
            "deployment {} ended {}",
            v["id"],
            v["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!(
        "/api/v1/projects/{}/environments/{}",
        enc(&a.remote.project),
        enc(&a.env)
    );
    let v = c.call(Method::GET, &path, None).await?;
    print(a.remote.json, &v, |v| {
        let mut out = format!(
            "{}: {}",
            v["name"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("nothing live")
        );
        if let Some(p) = v["previous_version"].as_str() {
            out.push_str(&format!(" (rollback to {p})"));
        }
        if let Some(d) = v["deploying"].as_i64() {
            out.push_str(&format!(", deployment {d} running"));
        }
        for s in v["services"].as_array().into_iter().flatten() {
            let traffic: Vec<String> = s["traffic"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(ver, pct)| format!("{ver} {pct}%"))
                .collect();
            out.push_str(&format!(
                "\nservice {} ({}) on {}: {}",
                s["name"].as_str().unwrap_or("?"),
                s["strategy"].as_str().unwrap_or("?"),
                s["listen"].as_str().unwrap_or("the default proxy address"),
                traffic.join(", ")
            ));
        }
        for r in v["replicas"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  {:<28} {:<10} restarts {} in flight {} {}",
                r["replica"].as_str().unwrap_or("?"),
                r["health"].as_str().unwrap_or("?"),
                r["restarts"],
                r["in_flight"],
                r["address"].as_str().unwrap_or("")
            ));
        }
        for d in v["deployments"].as_array().into_iter().flatten().take(5) {
            out.push_str(&format!(
                "\n#{} {} {} {} by {}",
                d["id"],
                d["kind"].as_str().unwrap_or("?"),
                d["version"].as_str().unwrap_or("?"),
                d["state"].as_str().unwrap_or("?"),
                d["actor"].as_str().unwrap_or("?")
            ));
        }
        out
    });
    Ok(())
}
