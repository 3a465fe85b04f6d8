//! `ouro items` against a real server started in-process.

use std::process::Command;

use ouro_core::Actor;
use ouro_store::testing::backends;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn items(base: &str, token: &str, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("items")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_create_and_move_items_from_the_command_line() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ouro_server::Settings {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.fresh_url(dir.path()).await),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = ouro_server::start(settings, listener).await.unwrap();
        let base = format!("http://{}", running.addr);
        let store = running.state.store.clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(running.serve(async move {
            let _ = rx.await;
        }));
        let alice = ouro_store::accounts::create_user(
            &store,
            &Actor::System("test"),
            "alice",
            "password-1",
            false,
        )
        .await
        .unwrap();
        let token = ouro_store::accounts::create_token(
            &store,
            &Actor::System("test"),
            &alice,
            "cli",
            &["api".into()],
            None,
        )
        .await
        .unwrap()
        .1;
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

        let (b, t) = (base.clone(), token.clone());
        let run = move |args: Vec<&'static str>| {
            let (b, t) = (b.clone(), t.clone());
            tokio::task::spawn_blocking(move || items(&b, &t, &args))
        };
        let out = run(vec![
            "create",
            "-p",
            "demo",
            "--type",
            "story",
            "--title",
            "Log in with SSO",
        ])
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.stdout.trim(), "DEMO-1");
        run(vec![
            "create",
            "-p",
            "demo",
            "--type",
            "bug",
            "--title",
            "Crash on empty cart",
        ])
        .await
        .unwrap();

        let out = run(vec!["list", "-p", "demo"]).await.unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout.contains("DEMO-1") && out.stdout.contains("DEMO-2"),
            "{}",
            out.stdout
        );

        let out = run(vec!["move", "-p", "demo", "DEMO-1", "--to", "In progress"])
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.stdout.trim(), "DEMO-1 is now In progress");
        let out = run(vec!["move", "-p", "demo", "DEMO-1", "--to", "Nowhere"])
            .await
            .unwrap();
        assert!(!out.ok);
        assert!(
            out.stderr.contains("item.invalid_transition") && out.stderr.contains("allowed:"),
            "{}",
            out.stderr
        );

        let out = run(vec!["show", "-p", "demo", "DEMO-1", "--json"])
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            (v["key"].as_str(), v["state"].as_str()),
            (Some("DEMO-1"), Some("In progress"))
        );
        let out = run(vec!["show", "-p", "demo", "DEMO-1"]).await.unwrap();
        assert!(
            out.stdout.starts_with("DEMO-1  Log in with SSO") && out.stdout.contains("state"),
            "{}",
            out.stdout
        );

        let out = run(vec!["show", "-p", "demo", "DEMO-99"]).await.unwrap();
        assert!(
            !out.ok && out.stderr.contains("item.not_found"),
            "{}",
            out.stderr
        );
        let out = tokio::task::spawn_blocking({
            let b = base.clone();
            move || items(&b, "ouro_wrong", &["list", "-p", "demo"])
        })
        .await
        .unwrap();
        assert!(
            !out.ok && out.stderr.contains("auth.required") && out.stderr.contains("OURO_TOKEN"),
            "{}",
            out.stderr
        );

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
