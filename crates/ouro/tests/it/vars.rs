//! `ouro secret` and `ouro var` against a real server started in-process.

use std::io::Write;
use std::process::{Command, Stdio};

use ouro_store::testing::backends;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn ouro(base: &str, token: &str, args: &[String], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ouro"))
        .args(args)
        .env("OURO_SERVER", base)
        .env("OURO_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_variables_from_the_command_line() {
    for db in backends() {
        let srv = crate::served::served(&db, "alice", false, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let (base, state, store, token, alice) = (
            srv.base.clone(),
            srv.state.clone(),
            srv.store.clone(),
            srv.token.clone(),
            srv.user.clone(),
        );
        let project = ouro_store::projects::create(
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
        let run = move |args: &[&str], stdin: Option<&'static str>| {
            let (b, t) = (b.clone(), t.clone());
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            tokio::task::spawn_blocking(move || ouro(&b, &t, &args, stdin))
        };

        // From stdin (the trailing newline is dropped), from a file, and with --value.
        let out = run(
            &["secret", "set", "-p", "demo", "DEPLOY_TOKEN"],
            Some("stdin-secret-1\n"),
        )
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(
            out.stdout.trim(),
            "secret DEPLOY_TOKEN set for all environments"
        );
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "-----BEGIN KEY-----\nabc\n").unwrap();
        let out = run(
            &[
                "secret",
                "set",
                "-p",
                "demo",
                "SIGNING_KEY",
                "--env",
                "prod",
                "--from-file",
                file.to_str().unwrap(),
            ],
            None,
        )
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        let out = run(
            &["var", "set", "-p", "demo", "REGION", "--value", "eu-west"],
            None,
        )
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);

        // A short secret is refused with the reason.
        let out = run(
            &["secret", "set", "-p", "demo", "PIN", "--value", "1234"],
            None,
        )
        .await
        .unwrap();
        assert!(!out.ok);
        assert!(
            out.stderr.contains("build.invalid_variable_value") && out.stderr.contains("masked"),
            "{}",
            out.stderr
        );

        let out = run(&["secret", "list", "-p", "demo"], None).await.unwrap();
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.contains("DEPLOY_TOKEN") && out.stdout.contains("SIGNING_KEY"));
        assert!(out.stdout.contains("prod"), "{}", out.stdout);
        assert!(!out.stdout.contains("stdin-secret") && !out.stdout.contains("BEGIN"));
        let out = run(&["var", "list", "-p", "demo"], None).await.unwrap();
        assert!(
            out.stdout.contains("REGION") && out.stdout.contains("eu-west"),
            "{}",
            out.stdout
        );

        let mut conn = store.read().await.unwrap();
        let jv =
            ouro_build::secrets::for_job(&mut conn, &state.secrets, project.id, Some("prod"), true)
                .await
                .unwrap();
        drop(conn);
        assert_eq!(jv.secrets["DEPLOY_TOKEN"], "stdin-secret-1");
        assert_eq!(jv.secrets["SIGNING_KEY"], "-----BEGIN KEY-----\nabc\n");
        assert_eq!(jv.vars["REGION"], "eu-west");

        let out = run(
            &[
                "secret",
                "delete",
                "-p",
                "demo",
                "SIGNING_KEY",
                "--env",
                "prod",
            ],
            None,
        )
        .await
        .unwrap();
        assert!(out.ok, "{}", out.stderr);
        let out = run(&["secret", "delete", "-p", "demo", "SIGNING_KEY"], None)
            .await
            .unwrap();
        assert!(!out.ok);
        assert!(
            out.stderr.contains("build.variable_not_found"),
            "{}",
            out.stderr
        );
        let out = run(&["var", "delete", "-p", "demo", "REGION"], None)
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        let out = run(&["var", "list", "-p", "demo"], None).await.unwrap();
        assert_eq!(out.stdout.trim(), "no variables");

        srv.stop().await;
    }
}
