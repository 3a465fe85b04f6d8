//! `ouro cr ...`: change requests from the command line, through the HTTP API of a running server.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::items::{Client, Remote, enc, print};

#[derive(Args, Clone)]
pub struct Target {
    #[command(flatten)]
    remote: Remote,
    /// The repository's name.
    #[arg(long, short)]
    repo: String,
}

#[derive(Subcommand)]
pub enum CrCommand {
    /// List a repository's change requests, newest first.
    List {
        #[command(flatten)]
        target: Target,
        /// Only open, merged or closed ones.
        #[arg(long)]
        state: Option<String>,
        /// Only those with this label.
        #[arg(long)]
        label: Option<String>,
        /// Only those opened by this user.
        #[arg(long)]
        author: Option<String>,
        /// Only those where this user is a requested reviewer.
        #[arg(long)]
        reviewer: Option<String>,
    },
    /// Show one change request with its reviews, checks and merge gate.
    Show {
        #[command(flatten)]
        target: Target,
        number: i64,
    },
    /// Open a change request and print its number.
    Create {
        #[command(flatten)]
        target: Target,
        /// The branch with the change.
        #[arg(long)]
        source: String,
        /// The branch it should go into.
        #[arg(long = "target")]
        into: String,
        #[arg(long)]
        title: String,
        /// Markdown.
        #[arg(long)]
        description: Option<String>,
        /// Not ready to merge yet.
        #[arg(long)]
        draft: bool,
        /// A label (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A user asked to review (repeatable; members with at least the developer role).
        #[arg(long = "reviewer")]
        reviewers: Vec<String>,
    },
    /// Edit a change request: title, description, labels, reviewers, draft or ready.
    Edit {
        #[command(flatten)]
        target: Target,
        number: i64,
        #[arg(long)]
        title: Option<String>,
        /// Markdown.
        #[arg(long)]
        description: Option<String>,
        /// Mark it ready for review.
        #[arg(long, conflicts_with = "draft")]
        ready: bool,
        /// Convert it back to a draft.
        #[arg(long)]
        draft: bool,
        /// The labels it should have (repeatable; replaces the current ones).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        no_labels: bool,
        /// The reviewers it should have (repeatable; replaces the current ones).
        #[arg(long = "reviewer")]
        reviewers: Vec<String>,
    },
    /// Comment on a change request, on a line of its diff (`--path`, `--line`), or reply in a
    /// thread (`--reply-to`); prints the comment and thread ids.
    Comment {
        #[command(flatten)]
        target: Target,
        number: i64,
        /// Markdown.
        #[arg(long, short)]
        body: String,
        /// The file of a line comment.
        #[arg(long, requires = "line")]
        path: Option<String>,
        /// The line number (on the new side unless `--side old`).
        #[arg(long, requires = "path")]
        line: Option<u32>,
        /// `old` or `new`.
        #[arg(long, requires = "line")]
        side: Option<String>,
        /// Reply in the thread of this comment id.
        #[arg(long, conflicts_with = "path")]
        reply_to: Option<i64>,
    },
    /// List a change request's comment threads with their comments.
    Threads {
        #[command(flatten)]
        target: Target,
        number: i64,
    },
    /// Resolve a comment thread (or unresolve it with `--undo`).
    Resolve {
        #[command(flatten)]
        target: Target,
        number: i64,
        /// The thread id (see `ouro cr threads`).
        thread: i64,
        #[arg(long)]
        undo: bool,
    },
    /// Merge a change request through its gate; fails with the unmet conditions when blocked.
    Merge {
        #[command(flatten)]
        target: Target,
        number: i64,
        /// Delete the source branch after the merge.
        #[arg(long)]
        delete_source: bool,
    },
}

fn base(t: &Target) -> String {
    format!(
        "/api/v1/projects/{}/repos/{}/change-requests",
        enc(&t.remote.project),
        enc(&t.repo)
    )
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_string()
}

fn labels(c: &Value) -> String {
    let l: Vec<&str> = c["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .collect();
    if l.is_empty() {
        String::new()
    } else {
        format!("  [{}]", l.join(", "))
    }
}

fn line(c: &Value) -> String {
    format!(
        "!{:<5} {:<7} {} -> {}  {}{}{}",
        c["number"],
        text(c, "state"),
        text(c, "source"),
        text(c, "target"),
        text(c, "title"),
        if c["draft"] == Value::Bool(true) {
            " (draft)"
        } else {
            ""
        },
        labels(c)
    )
}

fn details(v: &Value) -> String {
    let mut out = format!("!{}  {}\n", v["number"], text(v, "title"));
    out.push_str(&format!(
        "state      {}{}\n",
        text(v, "state"),
        if v["draft"] == Value::Bool(true) {
            " (draft)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "branches   {} -> {}\n",
        text(v, "source"),
        text(v, "target")
    ));
    out.push_str(&format!(
        "author     {}\n",
        v["author"].as_str().unwrap_or("-")
    ));
    out.push_str(&format!("head       {}\n", text(v, "head")));
    let l = labels(v);
    if !l.is_empty() {
        out.push_str(&format!(
            "labels     {}\n",
            l.trim().trim_start_matches('[').trim_end_matches(']')
        ));
    }
    for r in v["reviewers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "reviewer   {}: {}\n",
            text(r, "user"),
            text(r, "state")
        ));
    }
    for s in v["statuses"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "check      {}: {}\n",
            text(s, "name"),
            text(s, "state")
        ));
    }
    for r in v["reviews"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "review     {}: {}{}\n",
            text(r, "reviewer"),
            text(r, "verdict"),
            if r["dismissed"] == Value::Bool(true) {
                " (dismissed)"
            } else {
                ""
            }
        ));
    }
    let threads = v["threads"].as_array().cloned().unwrap_or_default();
    if !threads.is_empty() {
        let open = threads
            .iter()
            .filter(|t| t["resolved"] != Value::Bool(true))
            .count();
        out.push_str(&format!(
            "threads    {} ({open} unresolved; `ouro cr threads` shows them)\n",
            threads.len()
        ));
    }
    let gate = &v["gate"];
    out.push_str(&format!(
        "\nmerge ({}): {}\n",
        text(gate, "merge_method"),
        if gate["mergeable"] == Value::Bool(true) {
            "ready"
        } else {
            "blocked"
        }
    ));
    for c in gate["conditions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} {}: {}\n",
            if c["met"] == Value::Bool(true) {
                "✓"
            } else {
                "✗"
            },
            text(c, "id"),
            text(c, "message")
        ));
    }
    if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
        out.push('\n');
        out.push_str(d);
    }
    out.trim_end().to_string()
}

/// One thread: a header line (id, where, state) and its comments indented.
fn thread_text(t: &Value) -> String {
    let place = match t["anchor"].as_object() {
        Some(a) => format!(
            "{}:{}{}",
            a.get("path").and_then(Value::as_str).unwrap_or(""),
            a.get("line").map(Value::to_string).unwrap_or_default(),
            if a.get("side").and_then(Value::as_str) == Some("old") {
                " (old)"
            } else {
                ""
            }
        ),
        None => "change request".to_string(),
    };
    let mut state = Vec::new();
    if t["resolved"] == Value::Bool(true) {
        state.push(format!(
            "resolved by {}",
            t["resolved_by"].as_str().unwrap_or("-")
        ));
    }
    if t["outdated"] == Value::Bool(true) {
        state.push("outdated".to_string());
    }
    let mut out = format!(
        "thread {}  {}{}",
        t["id"],
        place,
        if state.is_empty() {
            String::new()
        } else {
            format!("  [{}]", state.join(", "))
        }
    );
    for c in t["comments"].as_array().into_iter().flatten() {
        let body = text(c, "body");
        let mut lines = body.lines();
        out.push_str(&format!(
            "\n  #{} {}: {}",
            c["id"],
            c["author"].as_str().unwrap_or("(deleted user)"),
            lines.next().unwrap_or("")
        ));
        for l in lines {
            out.push_str(&format!("\n      {l}"));
        }
    }
    out
}

pub async fn run(cmd: CrCommand) -> anyhow::Result<()> {
    match cmd {
        CrCommand::List {
            target,
            state,
            label,
            author,
            reviewer,
        } => {
            let c = Client::new(&target.remote)?;
            let mut path = base(&target);
            let query: Vec<String> = [
                ("state", state),
                ("label", label),
                ("author", author),
                ("reviewer", reviewer),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(&v))))
            .collect();
            if !query.is_empty() {
                path.push('?');
                path.push_str(&query.join("&"));
            }
            let v = c.call(Method::GET, &path, None).await?;
            print(target.remote.json, &v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return "no change requests".to_string();
                }
                rows.iter().map(line).collect::<Vec<_>>().join("\n")
            });
        }
        CrCommand::Show { target, number } => {
            let c = Client::new(&target.remote)?;
            let path = format!("{}/{number}", base(&target));
            let v = c.call(Method::GET, &path, None).await?;
            print(target.remote.json, &v, details);
        }
        CrCommand::Create {
            target,
            source,
            into,
            title,
            description,
            draft,
            labels,
            reviewers,
        } => {
            let c = Client::new(&target.remote)?;
            let body = json!({"source": source, "target": into, "title": title,
                              "description": description, "draft": draft,
                              "labels": labels, "reviewers": reviewers});
            let v = c.call(Method::POST, &base(&target), Some(body)).await?;
            print(target.remote.json, &v, |v| v["number"].to_string());
        }
        CrCommand::Edit {
            target,
            number,
            title,
            description,
            ready,
            draft,
            labels,
            no_labels,
            reviewers,
        } => {
            let c = Client::new(&target.remote)?;
            let mut body = serde_json::Map::new();
            if let Some(t) = title {
                body.insert("title".into(), json!(t));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if ready || draft {
                body.insert("draft".into(), json!(draft));
            }
            if no_labels || !labels.is_empty() {
                body.insert("labels".into(), json!(labels));
            }
            if !reviewers.is_empty() {
                body.insert("reviewers".into(), json!(reviewers));
            }
            let path = format!("{}/{number}", base(&target));
            let v = c
                .call(Method::PATCH, &path, Some(Value::Object(body)))
                .await?;
            print(target.remote.json, &v, line);
        }
        CrCommand::Comment {
            target,
            number,
            body,
            path,
            line,
            side,
            reply_to,
        } => {
            let c = Client::new(&target.remote)?;
            let body = json!({"body": body, "path": path, "line": line, "side": side,
                              "reply_to": reply_to});
            let url = format!("{}/{number}/comments", base(&target));
            let v = c.call(Method::POST, &url, Some(body)).await?;
            print(target.remote.json, &v, |v| {
                format!("comment {} in thread {}", v["id"], v["thread_id"])
            });
        }
        CrCommand::Threads { target, number } => {
            let c = Client::new(&target.remote)?;
            let url = format!("{}/{number}/comments", base(&target));
            let v = c.call(Method::GET, &url, None).await?;
            print(target.remote.json, &v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return "no comments".to_string();
                }
                rows.iter()
                    .map(thread_text)
                    .collect::<Vec<_>>()
                    .join("\n\n")
            });
        }
        CrCommand::Resolve {
            target,
            number,
            thread,
            undo,
        } => {
            let c = Client::new(&target.remote)?;
            let verb = if undo { "unresolve" } else { "resolve" };
            let url = format!("{}/{number}/threads/{thread}/{verb}", base(&target));
            let v = c.call(Method::POST, &url, None).await?;
            print(target.remote.json, &v, thread_text);
        }
        CrCommand::Merge {
            target,
            number,
            delete_source,
        } => {
            let c = Client::new(&target.remote)?;
            let path = format!("{}/{number}/merge", base(&target));
            let v = c
                .call(
                    Method::POST,
                    &path,
                    Some(json!({"delete_source": delete_source})),
                )
                .await?;
            print(target.remote.json, &v, |v| {
                format!(
                    "merged !{} into {} as {}",
                    v["number"],
                    text(v, "target"),
                    text(v, "merge_commit")
                )
            });
        }
    }
    Ok(())
}
