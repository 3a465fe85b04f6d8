//! `ouro pipeline ...`: start, cancel and re-run pipeline runs through the HTTP API of a running
//! server.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::items::{Client, Remote, enc, print};

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Start the pipelines with a `manual` trigger at a branch or tag; prints the run numbers.
    Run {
        #[command(flatten)]
        remote: Remote,
        /// The repository's name.
        #[arg(long, short)]
        repo: String,
        /// The branch or tag (`main`, `refs/tags/v1`).
        #[arg(long = "ref", default_value = "main")]
        git_ref: String,
        /// A manual input `NAME=VALUE` (repeatable; typed against the pipeline's inputs).
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
    },
    /// Cancel a run's queued and running jobs.
    Cancel {
        #[command(flatten)]
        remote: Remote,
        /// The run's number.
        number: i64,
    },
    /// Re-run a finished run (all jobs, the failed ones, or the named jobs and what needs them).
    Rerun {
        #[command(flatten)]
        remote: Remote,
        /// The run's number.
        number: i64,
        /// `all` (default), `failed`, or a job key (repeatable).
        #[arg(long = "job", value_name = "all|failed|KEY")]
        jobs: Vec<String>,
    },
}

fn summary(run: &Value) -> String {
    format!(
        "#{} {} {} ({})",
        run["number"],
        run["pipeline"].as_str().unwrap_or(""),
        run["status"].as_str().unwrap_or(""),
        run["ref"].as_str().unwrap_or("")
    )
}

/// `NAME=VALUE` pairs as the API's `inputs` object.
fn parse_inputs(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            anyhow::bail!("--input {p:?}: expected NAME=VALUE");
        };
        if k.is_empty() {
            anyhow::bail!("--input {p:?}: the name is empty");
        }
        out.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}

pub async fn run(cmd: PipelineCommand) -> anyhow::Result<()> {
    match cmd {
        PipelineCommand::Run {
            remote,
            repo,
            git_ref,
            inputs,
        } => {
            let inputs = parse_inputs(&inputs)?;
            let c = Client::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/repos/{}/pipelines",
                enc(&remote.project),
                enc(&repo)
            );
            let v = c
                .call(
                    Method::POST,
                    &path,
                    Some(json!({"ref": git_ref, "inputs": inputs})),
                )
                .await?;
            print(remote.json, &v, |v| {
                v["runs"]
                    .as_array()
                    .map(|runs| runs.iter().map(summary).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default()
            });
            Ok(())
        }
        PipelineCommand::Cancel { remote, number } => {
            let c = Client::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/pipelines/{number}/cancel",
                enc(&remote.project)
            );
            let v = c.call(Method::POST, &path, None).await?;
            print(remote.json, &v, summary);
            Ok(())
        }
        PipelineCommand::Rerun {
            remote,
            number,
            jobs,
        } => {
            let c = Client::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/pipelines/{number}/rerun",
                enc(&remote.project)
            );
            let sel = match jobs.as_slice() {
                [] => json!("all"),
                [one] if one == "all" || one == "failed" => json!(one),
                keys => json!(keys),
            };
            let v = c
                .call(Method::POST, &path, Some(json!({"jobs": sel})))
                .await?;
            print(remote.json, &v, summary);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_name_value_pairs() {
        let m = parse_inputs(&["level=high".into(), "msg=a=b".into()]).unwrap();
        assert_eq!(m["level"], "high");
        assert_eq!(m["msg"], "a=b");
        assert!(parse_inputs(&["nope".into()]).is_err());
        assert!(parse_inputs(&["=x".into()]).is_err());
    }
}
