//! `ouro secret ...` and `ouro var ...`: a project's pipeline secrets and variables, through the
//! HTTP API of a running server. A secret's value is read from `--value`, `--from-file` or
//! standard input, and is never printed (the server never returns it).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::items::{Client, Remote, enc};

#[derive(Subcommand)]
pub enum VarsCommand {
    /// Set (add or replace) a value. Without --value or --from-file it is read from stdin.
    Set {
        #[command(flatten)]
        remote: Remote,
        /// The name, e.g. DEPLOY_TOKEN (capital letters, digits and _).
        name: String,
        /// Only for jobs of this environment; omit for every environment.
        #[arg(long = "env")]
        environment: Option<String>,
        /// The value (visible in your shell history: prefer --from-file or stdin for secrets).
        #[arg(long, conflicts_with = "from_file")]
        value: Option<String>,
        /// Read the value from this file (taken as is, including a final newline).
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List names, scope and who changed them (variables also show their values).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a value.
    Delete {
        #[command(flatten)]
        remote: Remote,
        name: String,
        /// The environment it is scoped to; omit for the project-wide one.
        #[arg(long = "env")]
        environment: Option<String>,
    },
}

/// Which collection a command works on.
#[derive(Clone, Copy)]
pub enum Which {
    Secret,
    Var,
}

impl Which {
    fn path(self) -> &'static str {
        match self {
            Which::Secret => "secrets",
            Which::Var => "variables",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Which::Secret => "secret",
            Which::Var => "variable",
        }
    }
}

fn read_value(value: Option<String>, from_file: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(v) = value {
        return Ok(v);
    }
    if let Some(f) = from_file {
        return std::fs::read_to_string(&f)
            .with_context(|| format!("cannot read {} (it must be UTF-8 text)", f.display()));
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the value from standard input")?;
    // `echo value | ouro secret set` adds one newline that is not part of the value.
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

fn scope(env: &str) -> String {
    if env.is_empty() {
        "all environments".into()
    } else {
        format!("environment {env}")
    }
}

pub async fn run(which: Which, cmd: VarsCommand) -> anyhow::Result<()> {
    match cmd {
        VarsCommand::Set {
            remote,
            name,
            environment,
            value,
            from_file,
        } => {
            let value = read_value(value, from_file)?;
            if matches!(which, Which::Secret) && value.is_empty() {
                bail!("the secret's value is empty: pass --value, --from-file or pipe it on stdin");
            }
            let c = Client::new(&remote)?;
            let env = environment.unwrap_or_default();
            let path = format!(
                "/api/v1/projects/{}/{}/{}",
                enc(&remote.project),
                which.path(),
                enc(&name)
            );
            let v = c
                .call(
                    Method::PUT,
                    &path,
                    Some(json!({"value": value, "environment": env})),
                )
                .await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} {name} set for {}", which.noun(), scope(&env));
            }
        }
        VarsCommand::List { remote } => {
            let c = Client::new(&remote)?;
            let path = format!("/api/v1/projects/{}/{}", enc(&remote.project), which.path());
            let v = c.call(Method::GET, &path, None).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let list = v[which.path()].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no {}s", which.noun());
            }
            for e in &list {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                let env = match s("environment") {
                    e if e.is_empty() => "*".to_string(),
                    e => e,
                };
                let mut line = format!(
                    "{:<30} {:<12} {} {}",
                    s("name"),
                    env,
                    s("updated_by"),
                    s("updated_at")
                );
                if let Some(val) = e.get("value").and_then(Value::as_str) {
                    line.push_str(&format!("  = {val}"));
                }
                println!("{line}");
            }
        }
        VarsCommand::Delete {
            remote,
            name,
            environment,
        } => {
            let c = Client::new(&remote)?;
            let env = environment.unwrap_or_default();
            let path = format!(
                "/api/v1/projects/{}/{}/{}?environment={}",
                enc(&remote.project),
                which.path(),
                enc(&name),
                enc(&env)
            );
            c.call(Method::DELETE, &path, None).await?;
            println!("{} {name} deleted for {}", which.noun(), scope(&env));
        }
    }
    Ok(())
}
