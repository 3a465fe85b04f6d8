//! The server with its blob store in S3 (moto): a pushed pipeline's job uploads an artifact,
//! the job that needs it gets it, users download it byte-exact, and the bytes live in the bucket,
//! not in the data dir. Skipped with a message without `moto_server` (a failure with CI=true).

use std::cell::RefCell;

use crate::support::*;
use ouro_build::blobs::BlobStore;
use ouro_build::blobs_s3::BlobSettings;
use ouro_server::Settings;
use reqwest::Method;

thread_local! {
    /// The `[blobs]` settings the next test server on this thread gets.
    static BLOBS: RefCell<BlobSettings> = RefCell::new(BlobSettings::default());
}

const CI: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    artifacts:
      paths: [out/app.bin]
    steps:
      - run: mkdir -p out && seq 1 40000 > out/app.bin
  test:
    needs: build
    steps:
      - run: test \"$(wc -l < out/app.bin)\" = 40000 && tail -n 1 out/app.bin
";

#[tokio::test]
async fn artifacts_of_a_real_run_live_in_s3() {
    let Some(m) = ouro_build::testing::moto() else {
        return;
    };
    for db in backends() {
        let bucket = m.bucket(&format!("srv-{}", db.name().to_ascii_lowercase()));
        let blobs = m.settings(&bucket, "ouro/");
        BLOBS.with(|b| *b.borrow_mut() = blobs.clone());
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st: &mut Settings| {
                    st.runner_slots = 2;
                    st.blobs = BLOBS.with(|b| b.borrow().clone());
                },
                ..Options::default()
            },
        )
        .await;
        push_pipeline(&s, CI).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{}: {run}", db.name());
        let (st, list) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/pipelines/1/artifacts",
                None,
            )
            .await;
        assert_eq!(st, 200, "{list}");
        let arts = list["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 1, "{list}");
        let id = arts[0]["id"].as_i64().unwrap();
        let sha = arts[0]["sha256"].as_str().unwrap().to_string();
        let want: String = (1..=40000).map(|i| format!("{i}\n")).collect();
        let r = s
            .req(
                Method::GET,
                &format!("/api/v1/projects/demo/pipelines/1/artifacts/{id}"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let got = r.bytes().await.unwrap();
        assert!(got == want.as_bytes(), "the download differs");
        // The bytes are in the bucket (seen by another client), none in the data dir.
        let other = ouro_build::blobs_s3::S3BlobStore::new(&blobs, None).unwrap();
        let found = tokio::task::spawn_blocking(move || other.exists(&sha))
            .await
            .unwrap()
            .unwrap();
        assert!(found, "the artifact's blob is in S3");
        assert!(
            !s.dir.path().join("blobs/sha256").exists(),
            "nothing went to the data dir"
        );
        s.stop().await;
    }
}
