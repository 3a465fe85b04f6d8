//! Release bundles over HTTP: the signing public key, and a release's bundle download (404 until
//! bundled, authz per project role); the downloaded bytes verify against the published key. The
//! release rows are inserted directly (the creation flow is elsewhere).

use std::io::Cursor;

use crate::support::*;
use ouro_release::{bundle, signing};
use ouro_store::q;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

const BUNDLE: &str = "/api/v1/projects/demo/releases/1.0.0/bundle";

/// A release 1.0.0 of `demo` with two stored artifacts; returns its id.
async fn release(s: &TestServer, project_id: i64) -> i64 {
    let mut tx = s.state.store.begin().await.unwrap();
    let id = q("INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, created_at) \
                VALUES ($1, 1, '1.0.0', 'v1.0.0', $2, 'published', '', 1700000000000) RETURNING id")
        .bind(project_id)
        .bind("c".repeat(40))
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    for (path, content) in [
        ("app.bin", &b"\x7fELF app"[..]),
        ("notes/CHANGELOG.md", b"# 1.0.0\n"),
    ] {
        s.state.blobs.put(&mut &content[..], None).unwrap();
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
    id
}

#[tokio::test]
async fn bundles_download_after_bundling_and_verify_against_the_published_key() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let bob = s.user("bob").await;
        let carol = s.user("carol").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/bob",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);

        // The public key: any signed-in user; the same key every time.
        let (st, key) = s
            .call(
                Method::GET,
                "/api/v1/release-signing-key",
                Some(&carol),
                None,
            )
            .await;
        assert_eq!(st, 200, "{key}");
        assert_eq!(key["algorithm"], "ed25519");
        let public = key["public_key"].as_str().unwrap().to_string();
        assert_eq!(public.len(), 64);
        let (_, again) = s
            .admin(Method::GET, "/api/v1/release-signing-key", None)
            .await;
        assert_eq!(again["public_key"], public.as_str());
        let (st, _) = s
            .call(Method::GET, "/api/v1/release-signing-key", None, None)
            .await;
        assert_eq!(st, 401, "{}", db.name());

        // 404 for an unknown release and for one not bundled yet.
        let (st, body) = s.admin(Method::GET, BUNDLE, None).await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (404, "release.bundle_not_found")
        );
        let id = release(&s, project.id).await;
        let (st, body) = s.admin(Method::GET, BUNDLE, None).await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (404, "release.bundle_not_found")
        );

        let key = signing::load_or_create(&s.state.settings.data_dir).unwrap();
        assert_eq!(signing::public_key_hex(&key), public);
        let made = bundle::create_for_release(&s.state.store, s.state.blobs.clone(), &key, id)
            .await
            .unwrap();

        let res = s.req(Method::GET, BUNDLE, Some(&bob)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{}", db.name());
        assert_eq!(
            res.headers()["content-disposition"],
            "attachment; filename=\"demo-1.0.0.tar.zst\""
        );
        assert_eq!(res.headers()["content-type"], "application/zstd");
        let bytes = res.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, made.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), made.sha256);
        let pinned = signing::parse_public_key(&public).unwrap();
        let m = bundle::verify(Cursor::new(&bytes[..]), Some(&pinned)).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["app.bin", "notes/CHANGELOG.md"]);
        assert_eq!((m.version.as_str(), m.tag.as_str()), ("1.0.0", "v1.0.0"));

        // Not a member of the private project, or not signed in: no bundle.
        let (st, _) = s.call(Method::GET, BUNDLE, Some(&carol), None).await;
        assert!(st == 403 || st == 404, "{}: {st}", db.name());
        let (st, _) = s.call(Method::GET, BUNDLE, None, None).await;
        assert!(st == 401 || st == 404, "{}: {st}", db.name());
        s.stop().await;
    }
}
