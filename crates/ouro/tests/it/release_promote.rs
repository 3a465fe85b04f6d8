//! `ouro release promote` and `ouro release approve` against a real server started in-process
//! (the path from the project settings, a published release row written directly).

use std::process::Command;

use ouro_store::testing::backends;

fn release(base: &str, token: &str, args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("release")
        .args(args)
        .env("OURO_SERVER", base)
        .env("OURO_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A served instance with the demo repository and release rows `(version, state)` written
/// directly; returns the server and the project's id.
async fn with_releases(
    db: &ouro_store::testing::TestDb,
    rows: &[(&str, &str)],
) -> (crate::served::Served, i64) {
    let srv = crate::served::served(db, "alice", false, 0).await;
    srv.demo_repo().await;
    let project = ouro_store::projects::by_slug(&mut srv.store.read().await.unwrap(), "demo")
        .await
        .unwrap()
        .unwrap();
    let mut tx = srv.store.begin().await.unwrap();
    for (v, state) in rows {
        ouro_store::q(
            "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, \
             created_at) VALUES ($1, (SELECT id FROM code_repos WHERE name = 'app'), $2, $3, \
             'abc', $4, 'first notes', 1)",
        )
        .bind(project.id)
        .bind(*v)
        .bind(format!("v{v}"))
        .bind(*state)
        .execute(&mut tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    (srv, project.id)
}

/// `ouro release ARGS...` as alice, off the async runtime: (success, stdout, stderr).
fn cli(
    srv: &crate::served::Served,
    args: &[&str],
) -> impl std::future::Future<Output = Result<(bool, String, String), ()>> + use<> {
    let (b, t) = (srv.base.clone(), srv.token.clone());
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    async move {
        Ok(tokio::task::spawn_blocking(move || release(&b, &t, &a))
            .await
            .unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_then_approve_and_reject_from_the_command_line() {
    for db in backends() {
        let (srv, project) =
            with_releases(&db, &[("1.0.0", "published"), ("1.1.0", "published")]).await;
        ouro_release::promotions::put_settings(
            &srv.store,
            project,
            &ouro_core::Actor::System("test"),
            None,
            "environments:\n  dev: {}\n  staging:\n    approvals: {required: 1, from: [alice]}\n",
            1,
        )
        .await
        .unwrap();
        let run = |a: Vec<&str>| cli(&srv, &a);

        let (ok, _, err) = run(vec!["promote", "1.0.0", "--env", "staging", "-p", "demo"])
            .await
            .unwrap();
        assert!(!ok);
        assert!(err.contains("release.promotion_out_of_order"), "{err}");
        let (ok, out, err) = run(vec!["promote", "1.0.0", "--env", "dev", "-p", "demo"])
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("1.0.0 -> dev approved"), "{out}");
        let (ok, out, err) = run(vec!["promote", "1.0.0", "--env", "staging", "-p", "demo"])
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("1.0.0 -> staging requested"), "{out}");
        assert!(
            out.contains("pending  approvals: 0 of 1 approvals from alice"),
            "{out}"
        );
        let id = out
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_string();
        let (ok, out, err) = run(vec!["approve", &id, "--comment", "go", "-p", "demo"])
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("staging approved"), "{out}");
        assert!(out.contains("approve by alice"), "{out}");
        assert!(out.contains(": go"), "{out}");

        run(vec!["promote", "1.1.0", "--env", "dev", "-p", "demo"])
            .await
            .unwrap();
        let (_, out, _) = run(vec![
            "promote", "1.1.0", "--env", "staging", "-p", "demo", "--json",
        ])
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = v["id"].to_string();
        let (ok, out, err) = run(vec![
            "approve",
            &id,
            "--reject",
            "--comment",
            "no",
            "-p",
            "demo",
        ])
        .await
        .unwrap();
        assert!(ok, "{err}");
        assert!(
            out.contains("staging rejected (rejected by alice)"),
            "{out}"
        );
        srv.stop().await;
    }
}

/// `ouro release list|show|notes|create` against rows written directly: a draft's notes can be
/// replaced from a file and read back; a published release's cannot; a run that does not exist
/// is refused with the API's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_notes_from_the_command_line() {
    for db in backends() {
        let (srv, _) = with_releases(&db, &[("1.0.0", "published"), ("1.1.0", "draft")]).await;
        let dir = tempfile::tempdir().unwrap();
        let notes_file = dir.path().join("notes.md");
        std::fs::write(&notes_file, "## Better notes\n").unwrap();
        let notes_arg = notes_file.display().to_string();
        let run = |a: Vec<&str>| cli(&srv, &a);

        let (ok, out, err) = run(vec!["list", "-p", "demo"]).await.unwrap();
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(out.contains("1.1.0") && out.contains("draft"), "{out}");
        assert!(out.contains("v1.0.0") && out.contains("published"), "{out}");

        let (ok, out, err) = run(vec!["show", "1.1.0", "-p", "demo", "--json"])
            .await
            .unwrap();
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["state"], "draft", "{out}");
        assert_eq!(v["notes"], "first notes", "{out}");

        let (ok, out, err) = run(vec!["notes", "1.1.0", "-p", "demo", "--set", &notes_arg])
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("notes of 1.1.0 updated"), "{out}");
        let (ok, out, _) = run(vec!["notes", "1.1.0", "-p", "demo"]).await.unwrap();
        assert!(ok);
        assert_eq!(out.trim(), "## Better notes", "{out}");

        let (ok, _, err) = run(vec!["notes", "1.0.0", "-p", "demo", "--set", &notes_arg])
            .await
            .unwrap();
        assert!(!ok);
        assert!(err.contains("release.immutable"), "{err}");

        let (ok, _, err) = run(vec!["show", "9.9.9", "-p", "demo"]).await.unwrap();
        assert!(!ok);
        assert!(err.contains("release.not_found"), "{err}");

        let (ok, _, err) = run(vec!["create", "-p", "demo", "--repo", "app", "--run", "42"])
            .await
            .unwrap();
        assert!(!ok, "a run that does not exist cannot be released");
        assert!(err.contains("404") || err.contains("not_found"), "{err}");
    }
}
