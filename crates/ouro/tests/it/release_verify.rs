//! `ouro release verify` against a bundle downloaded from a real server: `ok` and exit 0 when
//! intact (with and without a pinned key), exit 1 naming the file when a byte of an artifact was
//! changed or another key is pinned, exit 2 when the bundle or the key cannot be read.

use std::path::Path;
use std::process::{Command, Output};

use ouro_release::{bundle, signing};
use ouro_store::q;
use ouro_store::testing::backends;
use sha2::{Digest, Sha256};

const APP: &[u8] = b"\x7fELF app-binary-v1";

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ouro"))
        .args(["release", "verify"])
        .args(args)
        .env("OURO_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Publishes a bundle of release 1.0.0 of `demo` on the server; returns its bytes and the
/// instance's public key as served.
async fn bundle_from_server(srv: &crate::served::Served) -> (Vec<u8>, String) {
    let project = ouro_store::projects::create(
        &srv.store,
        &srv.user,
        "demo",
        "Demo",
        "",
        ouro_store::projects::Visibility::Private,
    )
    .await
    .unwrap();
    let mut tx = srv.store.begin().await.unwrap();
    let id = q("INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, created_at) \
                VALUES ($1, 1, '1.0.0', 'v1.0.0', $2, 'published', '', 1700000000000) RETURNING id")
        .bind(project.id)
        .bind("d".repeat(40))
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    for (path, content) in [("app.bin", APP), ("README.md", &b"# demo\n"[..])] {
        srv.state.blobs.put(&mut &content[..], None).unwrap();
        q("INSERT INTO release_artifacts (release_id, path, sha256, size) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(path)
            .bind(hex::encode(Sha256::digest(content)))
            .bind(content.len() as i64)
            .execute(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let key = signing::load_or_create(&srv.state.settings.data_dir).unwrap();
    bundle::create_for_release(&srv.store, srv.state.blobs.clone(), &key, id)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let res = http
        .get(format!(
            "{}/api/v1/projects/demo/releases/1.0.0/bundle",
            srv.base
        ))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let bytes = res.bytes().await.unwrap().to_vec();
    let key: serde_json::Value = http
        .get(format!("{}/api/v1/release-signing-key", srv.base))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (bytes, key["public_key"].as_str().unwrap().to_string())
}

/// The bundle with one byte of app.bin's content changed (same size), recompressed.
fn tampered(bundle: &[u8]) -> Vec<u8> {
    let mut raw = zstd::decode_all(bundle).unwrap();
    let at = raw
        .windows(APP.len())
        .position(|w| w == APP)
        .expect("app.bin's bytes are in the archive");
    raw[at + APP.len() - 1] = b'2';
    zstd::encode_all(raw.as_slice(), 3).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn verify_accepts_a_served_bundle_and_names_a_tampered_file() {
    for db in backends() {
        let srv = crate::served::served(&db, "alice", false, 0).await;
        let (bytes, public) = bundle_from_server(&srv).await;
        srv.stop().await;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("demo-1.0.0.tar.zst");
        std::fs::write(&good, &bytes).unwrap();

        let o = verify(&[path_str(&good)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "ok\n");
        assert!(stderr(&o).contains("demo 1.0.0"), "{}", stderr(&o));

        // Pinned key: as hex, and as the saved JSON of the key endpoint.
        let o = verify(&[path_str(&good), "--key", &public]);
        assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "ok\n"));
        let key_file = dir.path().join("key.json");
        std::fs::write(&key_file, format!("{{\"public_key\": \"{public}\"}}")).unwrap();
        let o = verify(&[path_str(&good), "--key", path_str(&key_file)]);
        assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "ok\n"));

        // Another key pinned: exit 1, manifest.pub named.
        let other = signing::public_key_hex(&signing::SigningKey::from_bytes(&[5; 32]));
        let o = verify(&[path_str(&good), "--key", &other]);
        assert_eq!(o.status.code(), Some(1), "{}", db.name());
        assert!(stdout(&o).starts_with("manifest.pub: "), "{}", stdout(&o));

        // One byte of app.bin changed: exit 1, the file and both digests named.
        let bad = dir.path().join("tampered.tar.zst");
        std::fs::write(&bad, tampered(&bytes)).unwrap();
        let o = verify(&[path_str(&bad)]);
        assert_eq!(o.status.code(), Some(1), "{}", db.name());
        let out = stdout(&o);
        let mut changed = APP.to_vec();
        *changed.last_mut().unwrap() = b'2';
        assert_eq!(
            out,
            format!(
                "files/app.bin: sha256 mismatch (manifest {}, actual {})\n",
                hex::encode(Sha256::digest(APP)),
                hex::encode(Sha256::digest(&changed))
            )
        );
        assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));

        // Truncated: exit 1.
        let cut = dir.path().join("cut.tar.zst");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let o = verify(&[path_str(&cut)]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

        // Unreadable bundle or key: exit 2.
        let o = verify(&[path_str(&dir.path().join("nope.tar.zst"))]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
        let o = verify(&[path_str(&good), "--key", "not-a-key"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("--key"), "{}", stderr(&o));
    }
}
