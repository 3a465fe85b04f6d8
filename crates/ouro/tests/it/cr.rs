//! `ouro cr` against a real server started in-process, with a repository pushed with git.

use std::path::Path;
use std::process::Command;

use ouro_store::testing::backends;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn cr(base: &str, token: &str, args: &[String]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("cr")
        .args(args)
        .env("OURO_SERVER", base)
        .env("OURO_TOKEN", token)
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_show_and_merge_change_requests_from_the_command_line() {
    for db in backends() {
        let srv = crate::served::served(&db, "alice", false, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let (base, store, token, alice) = (
            srv.base.clone(),
            srv.store.clone(),
            srv.token.clone(),
            srv.user.clone(),
        );
        ouro_store::projects::create(
            &store,
            &alice,
            "demo",
            "Demo",
            "",
            ouro_store::projects::Visibility::Private,
        )
        .await
        .unwrap();
        let repo: serde_json::Value = reqwest::Client::new()
            .post(format!("{base}/api/v1/projects/demo/repos"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "app"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = repo["clone_url"].as_str().unwrap().replacen(
            "http://",
            &format!("http://alice:{token}@"),
            1,
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let w = work.clone();
        tokio::task::spawn_blocking(move || {
            git(&w, &["init", "-q", "-b", "main"]);
            std::fs::write(w.join("README.md"), "hello\n").unwrap();
            git(&w, &["add", "."]);
            git(&w, &["commit", "-q", "-m", "Start"]);
            git(&w, &["push", "-q", &url, "main"]);
            git(&w, &["checkout", "-q", "-b", "feature"]);
            std::fs::write(w.join("feature.txt"), "new\n").unwrap();
            git(&w, &["add", "."]);
            git(&w, &["commit", "-q", "-m", "Add the feature"]);
            git(&w, &["push", "-q", &url, "feature"]);
        })
        .await
        .unwrap();

        let (b, t) = (base.clone(), token.clone());
        let run = move |a: Vec<String>| {
            let (b, t) = (b.clone(), t.clone());
            tokio::task::spawn_blocking(move || cr(&b, &t, &a))
        };
        let out = run(args(&[
            "create",
            "-p",
            "demo",
            "-r",
            "app",
            "--source",
            "feature",
            "--target",
            "main",
            "--title",
            "Add it",
            "--description",
            "Why",
            "--label",
            "first",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.stdout.trim(), "1");
        // A bad source is refused with the API's message.
        let out = run(args(&[
            "create", "-p", "demo", "-r", "app", "--source", "nope", "--target", "main", "--title",
            "X",
        ]))
        .await
        .unwrap();
        assert!(!out.ok);
        assert!(out.stderr.contains("no branch"), "{}", out.stderr);
        // Reviewers go through the API's checks: the author cannot review their own.
        let out = run(args(&[
            "create",
            "-p",
            "demo",
            "-r",
            "app",
            "--source",
            "feature",
            "--target",
            "main",
            "--title",
            "X",
            "--reviewer",
            "alice",
        ]))
        .await
        .unwrap();
        assert!(!out.ok);
        assert!(out.stderr.contains("cannot review"), "{}", out.stderr);

        // Edit: title, labels (replaced), draft; the list filters by label.
        let out = run(args(&[
            "edit",
            "-p",
            "demo",
            "-r",
            "app",
            "1",
            "--title",
            "Add it, edited",
            "--label",
            "ui",
            "--label",
            "bug",
            "--draft",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout.contains("Add it, edited (draft)  [bug, ui]"),
            "{}",
            out.stdout
        );
        let out = run(args(&["list", "-p", "demo", "-r", "app", "--label", "bug"]))
            .await
            .unwrap();
        assert!(out.stdout.contains("!1"), "{}", out.stdout);
        let out = run(args(&[
            "list", "-p", "demo", "-r", "app", "--label", "first",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(
            !out.stdout.contains("!1"),
            "the labels were replaced: {}",
            out.stdout
        );
        let out = run(args(&["show", "-p", "demo", "-r", "app", "1"]))
            .await
            .unwrap();
        assert!(out.stdout.contains("labels     bug, ui"), "{}", out.stdout);
        assert!(out.stdout.contains("✗ draft"), "{}", out.stdout);
        let out = run(args(&["edit", "-p", "demo", "-r", "app", "1", "--ready"]))
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(!out.stdout.contains("(draft)"), "{}", out.stdout);

        let out = run(args(&[
            "list", "-p", "demo", "-r", "app", "--state", "open",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.contains("!1"), "{}", out.stdout);
        assert!(out.stdout.contains("feature -> main"), "{}", out.stdout);

        // Show prints the gate: one approval is needed by default and alice is the author.
        let out = run(args(&["show", "-p", "demo", "-r", "app", "1"]))
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.contains("blocked"), "{}", out.stdout);
        assert!(out.stdout.contains("✗ approvals"), "{}", out.stdout);
        assert!(out.stdout.contains("✓ open"), "{}", out.stdout);

        // Comments, replies, threads and resolving them.
        let out = run(args(&[
            "comment",
            "-p",
            "demo",
            "-r",
            "app",
            "1",
            "--body",
            "Why this name?\nSecond line",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        assert_eq!(words[0], "comment", "{}", out.stdout);
        let (comment, thread) = (words[1].to_string(), words[4].to_string());
        let out = run(args(&[
            "comment",
            "-p",
            "demo",
            "-r",
            "app",
            "1",
            "--body",
            "It matches the module",
            "--reply-to",
            &comment,
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout.ends_with(&format!("in thread {thread}\n")),
            "a reply lands in the same thread: {}",
            out.stdout
        );
        let out = run(args(&["threads", "-p", "demo", "-r", "app", "1"]))
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout
                .starts_with(&format!("thread {thread}  change request\n")),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(": Why this name?\n      Second line"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(": It matches the module"),
            "{}",
            out.stdout
        );
        let out = run(args(&["show", "-p", "demo", "-r", "app", "1"]))
            .await
            .unwrap();
        assert!(
            out.stdout.contains("threads    1 (1 unresolved"),
            "{}",
            out.stdout
        );
        let out = run(args(&["resolve", "-p", "demo", "-r", "app", "1", &thread]))
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.contains("[resolved by alice]"), "{}", out.stdout);
        let out = run(args(&["show", "-p", "demo", "-r", "app", "1", "--json"]))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v["threads"][0]["resolved"], true,
            "the API embeds the threads"
        );
        assert_eq!(v["threads"][0]["comments"].as_array().unwrap().len(), 2);
        let out = run(args(&["resolve", "-p", "demo", "-r", "app", "1", "999999"]))
            .await
            .unwrap();
        assert!(!out.ok, "an unknown thread fails");

        // Merging is refused with the unmet conditions and a non-zero exit.
        let out = run(args(&["merge", "-p", "demo", "-r", "app", "1"]))
            .await
            .unwrap();
        assert!(!out.ok);
        assert!(out.stderr.contains("code.merge_blocked"), "{}", out.stderr);
        assert!(out.stderr.contains("✗ approvals"), "{}", out.stderr);

        // With no approvals required it merges.
        let res = reqwest::Client::new()
            .put(format!("{base}/api/v1/projects/demo/repos/app/merge-rules"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"merge_method": "squash", "required_approvals": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let out = run(args(&[
            "merge",
            "-p",
            "demo",
            "-r",
            "app",
            "1",
            "--delete-source",
        ]))
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.contains("merged !1 into main"), "{}", out.stdout);
        let out = run(args(&[
            "list", "-p", "demo", "-r", "app", "--state", "merged",
        ]))
        .await
        .unwrap();
        assert!(out.stdout.contains("!1"), "{}", out.stdout);

        srv.stop().await;
    }
}
