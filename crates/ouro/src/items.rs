//! `ouro items ...`: work items from the command line, through the HTTP API of a running server.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args, Clone)]
pub struct Remote {
    /// The server's base URL. Env: OURO_SERVER.
    #[arg(long, env = "OURO_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// A personal API token. Env: OURO_TOKEN.
    #[arg(long, env = "OURO_TOKEN", hide_env_values = true)]
    token: String,
    /// The project's slug.
    #[arg(long, short)]
    pub(crate) project: String,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub enum ItemsCommand {
    /// List items, optionally filtered by a query (docs/query-language.md).
    List {
        #[command(flatten)]
        remote: Remote,
        /// A query, e.g. 'type:story state:"In progress" assignee:me'.
        #[arg(long, short)]
        query: Option<String>,
        /// At most this many items.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one item.
    Show {
        #[command(flatten)]
        remote: Remote,
        /// The item's key, e.g. DEMO-42.
        key: String,
    },
    /// Create an item and print its key.
    Create {
        #[command(flatten)]
        remote: Remote,
        /// epic, feature, story, task, bug, incident or feedback.
        #[arg(long = "type", default_value = "story")]
        item_type: String,
        #[arg(long)]
        title: String,
        /// Markdown.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Move an item to another workflow state.
    Move {
        #[command(flatten)]
        remote: Remote,
        key: String,
        /// The target state, e.g. "In progress".
        #[arg(long)]
        to: String,
    },
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(r: &Remote) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client {
            http,
            base: r.server.trim_end_matches('/').to_string(),
            token: r.token.clone(),
        })
    }

    /// Sends a request; an API error becomes a message with its code (and the caret for a bad query).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.with_context(|| {
            format!("cannot reach {url}: is `ouro serve` running there? (--server)")
        })?;
        let status = res.status();
        let text = res.text().await.context("cannot read the response")?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let e = &v["error"];
            let mut msg = format!(
                "{} ({}): {}",
                e["code"].as_str().unwrap_or("error"),
                status.as_u16(),
                e["message"].as_str().unwrap_or(text.trim())
            );
            if let Some(allowed) = e["details"]["allowed"].as_array() {
                let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                msg.push_str(&format!("\nallowed: {}", names.join(", ")));
            }
            // A refused merge lists the conditions that are not met.
            if let Some(conds) = e["details"]["conditions"].as_array() {
                for c in conds.iter().filter(|c| c["met"] != Value::Bool(true)) {
                    msg.push_str(&format!(
                        "\n  ✗ {}: {}",
                        c["id"].as_str().unwrap_or("?"),
                        c["message"].as_str().unwrap_or("")
                    ));
                }
            }
            if let Some(caret) = e["details"]["caret"].as_str() {
                msg.push('\n');
                msg.push_str(caret);
            }
            if status.as_u16() == 401 {
                msg.push_str("\nCreate a token with `ouro admin create-token` or in the web UI, and pass it with --token or OURO_TOKEN.");
            }
            bail!(msg);
        }
        Ok(v)
    }
}

pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn line(item: &Value) -> String {
    let s = |k: &str| item[k].as_str().unwrap_or("").to_string();
    format!(
        "{:<12} {:<8} {:<12} {:<10} {}",
        s("key"),
        s("type"),
        s("state"),
        item["assignee"].as_str().unwrap_or("-"),
        s("title")
    )
}

pub(crate) fn print(json: bool, v: &Value, text: impl FnOnce(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text(v));
    }
}

pub async fn run(cmd: ItemsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        ItemsCommand::List {
            remote,
            query,
            limit,
        } => {
            let c = Client::new(&remote)?;
            let mut path = format!(
                "/api/v1/projects/{}/items?limit={limit}",
                enc(&remote.project)
            );
            if let Some(q) = query {
                path.push_str(&format!("&q={}", enc(&q)));
            }
            let v = c.call(Method::GET, &path, None).await?;
            print(remote.json, &v, |v| {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no items".to_string();
                }
                items.iter().map(line).collect::<Vec<_>>().join("\n")
            });
        }
        ItemsCommand::Show { remote, key } => {
            let c = Client::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/items/{}",
                enc(&remote.project),
                enc(&key)
            );
            let v = c.call(Method::GET, &path, None).await?;
            print(remote.json, &v, |v| {
                let mut out = format!(
                    "{}  {}\n",
                    v["key"].as_str().unwrap_or(""),
                    v["title"].as_str().unwrap_or("")
                );
                for k in [
                    "type", "state", "assignee", "reporter", "priority", "estimate", "parent",
                    "due_at",
                ] {
                    if !v[k].is_null() {
                        let val = v[k]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v[k].to_string());
                        out.push_str(&format!("{k:<10} {val}\n"));
                    }
                }
                if let Some(labels) = v["labels"].as_array().filter(|l| !l.is_empty()) {
                    let l: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
                    out.push_str(&format!("{:<10} {}\n", "labels", l.join(", ")));
                }
                if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
                    out.push('\n');
                    out.push_str(d);
                }
                out.trim_end().to_string()
            });
        }
        ItemsCommand::Create {
            remote,
            item_type,
            title,
            description,
        } => {
            let c = Client::new(&remote)?;
            let path = format!("/api/v1/projects/{}/items", enc(&remote.project));
            let body = json!({"type": item_type, "title": title, "description": description});
            let v = c.call(Method::POST, &path, Some(body)).await?;
            print(remote.json, &v, |v| {
                v["key"].as_str().unwrap_or("").to_string()
            });
        }
        ItemsCommand::Move { remote, key, to } => {
            let c = Client::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/items/{}/transitions",
                enc(&remote.project),
                enc(&key)
            );
            let v = c.call(Method::POST, &path, Some(json!({"to": to}))).await?;
            print(remote.json, &v, |v| {
                format!(
                    "{} is now {}",
                    v["key"].as_str().unwrap_or(&key),
                    v["state"].as_str().unwrap_or(&to)
                )
            });
        }
    }
    Ok(())
}
