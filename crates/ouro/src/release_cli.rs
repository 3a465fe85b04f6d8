//! `ouro release list|show|create|notes|publish`: releases through the HTTP API of a running
//! server. In a pipeline step use `--server "$OURO_SERVER_URL" --token "$OURO_JOB_TOKEN"`
//! (the job token may create releases of its own project).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use crate::items::{Client, Remote, enc, print};

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    remote: Remote,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    remote: Remote,
    /// The release's version.
    version: String,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    remote: Remote,
    /// The repository the pipeline run belongs to.
    #[arg(long)]
    repo: String,
    /// The pipeline run's number (in a job: $OURO_RUN_NUMBER).
    #[arg(long)]
    run: i64,
    /// An explicit version; default: computed from the Conventional Commits since the previous release.
    #[arg(long)]
    version: Option<String>,
    /// Make a pre-release with this identifier (`rc` -> `1.3.0-rc.1`).
    #[arg(long)]
    pre: Option<String>,
    /// Publish at once (tag and bundle) instead of leaving a draft; needs the maintainer role.
    #[arg(long)]
    publish: bool,
}

#[derive(Args)]
pub struct NotesArgs {
    #[command(flatten)]
    remote: Remote,
    /// The release's version.
    version: String,
    /// Replace a draft's notes with this Markdown file (`-` reads standard input); without it the
    /// notes are printed.
    #[arg(long)]
    set: Option<PathBuf>,
}

#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    remote: Remote,
    /// The draft's version.
    version: String,
}

/// `1.2.0  published  v1.2.0  abc1234`
fn line(r: &Value) -> String {
    format!(
        "{:<16} {:<10} {:<18} {}",
        r["version"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["tag"].as_str().unwrap_or("?"),
        r["sha"]
            .as_str()
            .map(|s| &s[..s.len().min(12)])
            .unwrap_or("?")
    )
}

fn detail(r: &Value) -> String {
    let mut out = line(r);
    if let Some(b) = r["bump"].as_str() {
        out.push_str(&format!("\nbump: {b}"));
        if let Some(why) = r["reason"].as_str() {
            out.push_str(&format!(" ({why})"));
        }
    }
    for a in r["artifacts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nartifact {} {} bytes sha256 {}",
            a["path"].as_str().unwrap_or("?"),
            a["size"],
            a["sha256"].as_str().unwrap_or("?")
        ));
    }
    out
}

fn release_path(remote: &Remote, version: &str) -> String {
    format!(
        "/api/v1/projects/{}/releases/{}",
        enc(&remote.project),
        enc(version)
    )
}

pub async fn list(a: ListArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!("/api/v1/projects/{}/releases", enc(&a.remote.project));
    let v = c.call(Method::GET, &path, None).await?;
    print(a.remote.json, &v, |v| {
        let rows: Vec<String> = v["releases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(line)
            .collect();
        if rows.is_empty() {
            "no releases".to_string()
        } else {
            rows.join("\n")
        }
    });
    Ok(())
}

pub async fn show(a: ShowArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let v = c
        .call(Method::GET, &release_path(&a.remote, &a.version), None)
        .await?;
    print(a.remote.json, &v, detail);
    Ok(())
}

pub async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!("/api/v1/projects/{}/releases", enc(&a.remote.project));
    let body = json!({
        "repo": a.repo,
        "run": a.run,
        "version": a.version,
        "pre": a.pre,
        "draft": !a.publish,
    });
    let v = c.call(Method::POST, &path, Some(body)).await?;
    print(a.remote.json, &v, detail);
    Ok(())
}

pub async fn notes(a: NotesArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = release_path(&a.remote, &a.version);
    let Some(file) = a.set else {
        let v = c.call(Method::GET, &path, None).await?;
        print(a.remote.json, &v, |v| {
            v["notes"].as_str().unwrap_or("").to_string()
        });
        return Ok(());
    };
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the notes from stdin")?
    } else {
        std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read the notes file {}", file.display()))?
    };
    let v = c
        .call(Method::PATCH, &path, Some(json!({"notes": text})))
        .await?;
    print(a.remote.json, &v, |v| {
        format!("notes of {} updated", v["version"].as_str().unwrap_or("?"))
    });
    Ok(())
}

pub async fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.remote)?;
    let path = format!("{}/publish", release_path(&a.remote, &a.version));
    let v = c.call(Method::POST, &path, None).await?;
    print(a.remote.json, &v, line);
    Ok(())
}
