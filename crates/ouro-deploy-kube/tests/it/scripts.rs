//! The two shell scripts the pods run, run here for real with this machine's `sh`, `curl`,
//! `zstd` and `tar` (the same tools the images need).

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use ouro_deploy_kube::manifests::{fetch_script, run_script};
use tokio::process::Command;

async fn wait_for_file(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills a service's process group (it runs in its own session) if a test ends early.
struct GroupGuard(String);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn the_entry_point_turns_sigterm_into_the_services_stop_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    // A service that needs SIGINT to stop cleanly, run through a compound command (so the
    // signal must reach the process group, not just the shell).
    let run = format!(
        "trap 'echo stopped-by-int; exit 7' INT; echo $$ > {0}.tmp; mv {0}.tmp {0}; while :; do sleep 0.05; done",
        started.display()
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(run_script())
        .env("OURO_RUN", run)
        .env("OURO_STOP_SIGNAL", "INT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    wait_for_file(&started).await;
    let service = std::fs::read_to_string(&started).expect("service pid");
    let _guard = GroupGuard(service.trim().to_string());
    let pid = child.id().expect("pid").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the entry point exits after the service stopped")
        .expect("output");
    assert_eq!(
        out.status.code(),
        Some(7),
        "the service's exit status is the pod's"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped-by-int"));
}

#[tokio::test]
async fn the_entry_point_exits_with_the_service() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(run_script())
        .env("OURO_RUN", "echo hello from $PWD; exit 3")
        .env("OURO_STOP_SIGNAL", "TERM")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from"));
}

#[tokio::test]
async fn the_init_script_downloads_and_unpacks_the_bundle_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("files/bin")).expect("mkdir");
    std::fs::write(src.join("manifest.json"), "{}").expect("manifest");
    std::fs::write(src.join("files/bin/hello.txt"), "hello bundle").expect("file");
    let archive = dir.path().join("bundle.tar.zst");
    let packed = Command::new("sh")
        .arg("-c")
        .arg("tar -cf - -C \"$SRC\" manifest.json files | zstd -q -c > \"$OUT\"")
        .env("SRC", &src)
        .env("OUT", &archive)
        .status()
        .await
        .expect("pack");
    assert!(packed.success());
    let bytes = std::fs::read(&archive).expect("archive");

    let app = Router::new().route(
        "/api/v1/projects/shop/releases/1.0.0/bundle",
        get(move |headers: HeaderMap| {
            let bytes = bytes.clone();
            async move {
                let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Bearer tok-123");
                if ok {
                    (StatusCode::OK, bytes)
                } else {
                    (StatusCode::UNAUTHORIZED, Vec::new())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/api/v1/projects/shop/releases/1.0.0/bundle",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let fetch = |token: &'static str, out: std::path::PathBuf, path: Option<std::ffi::OsString>| {
        let url = url.clone();
        async move {
            std::fs::create_dir_all(&out).expect("out dir");
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(fetch_script())
                .env("OURO_BUNDLE_URL", url)
                .env("OURO_BUNDLE_DIR", &out)
                .env("OURO_BUNDLE_TOKEN", token)
                .stderr(Stdio::null());
            if let Some(path) = path {
                cmd.env("PATH", path);
            }
            cmd.status().await.expect("fetch")
        }
    };
    let good = dir.path().join("good");
    assert!(fetch("tok-123", good.clone(), None).await.success());
    assert_eq!(
        std::fs::read_to_string(good.join("files/bin/hello.txt")).expect("unpacked"),
        "hello bundle"
    );
    assert!(
        !good.join(".bundle.tar.zst").exists(),
        "the archive is removed"
    );

    let bad = dir.path().join("bad");
    assert!(
        !fetch("wrong", bad.clone(), None).await.success(),
        "a refused download fails the pod"
    );
    assert!(!bad.join("files").exists());

    // An image with wget but no curl (busybox-like): only these tools on PATH.
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).expect("tools");
    for tool in ["wget", "zstd", "tar", "rm", "sh"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists());
        let Some(found) = found else {
            panic!("{tool} is needed for this test");
        };
        std::os::unix::fs::symlink(found, tools.join(tool)).expect("symlink");
    }
    let with_wget = dir.path().join("wget");
    assert!(
        fetch("tok-123", with_wget.clone(), Some(tools.into_os_string()))
            .await
            .success()
    );
    assert_eq!(
        std::fs::read_to_string(with_wget.join("files/bin/hello.txt")).expect("unpacked"),
        "hello bundle"
    );
}
