//! Attachment blobs: shared by content, swept once nothing refers to them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ouro_core::Actor;
use ouro_plan::attachments::{self, GcReport};
use ouro_plan::items::{self, NewItem};
use ouro_store::projects::{self, Visibility};
use ouro_store::testing::backends;
use ouro_store::{PLATFORM_MIGRATIONS, Store};

fn age(data_dir: &Path, sha: &str, by: Duration) {
    std::fs::File::options()
        .write(true)
        .open(attachments::blob_path(data_dir, sha))
        .unwrap()
        .set_modified(SystemTime::now() - by)
        .unwrap();
}

fn exists(data_dir: &Path, sha: &str) -> bool {
    attachments::blob_path(data_dir, sha).exists()
}

#[tokio::test]
async fn unreferenced_old_blobs_are_swept_and_shared_or_young_ones_kept() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = db.fresh_url(dir.path()).await;
        let store = Store::open(&url, &[PLATFORM_MIGRATIONS, ouro_plan::MIGRATIONS].concat())
            .await
            .unwrap();
        let alice = ouro_store::accounts::create_user(
            &store,
            &Actor::System("test"),
            "alice",
            "password-123",
            false,
        )
        .await
        .unwrap();
        let project = projects::create(&store, &alice, "gc", "GC", "", Visibility::Private)
            .await
            .unwrap();
        let actor = alice.actor();
        let data = dir.path().join("data");
        let mut keys = Vec::new();
        for t in ["one", "two"] {
            let input = NewItem {
                item_type: "story".into(),
                title: t.into(),
                ..NewItem::default()
            };
            keys.push(
                items::create(&store, &project, &actor, input)
                    .await
                    .unwrap()
                    .key,
            );
        }
        let shared = attachments::write_blob(&data, b"shared bytes").unwrap();
        let single = attachments::write_blob(&data, b"only once").unwrap();
        let a1 = attachments::add(
            &store,
            &project,
            &actor,
            &keys[0],
            "a.txt",
            "text/plain",
            12,
            &shared,
        )
        .await
        .unwrap();
        attachments::add(
            &store,
            &project,
            &actor,
            &keys[1],
            "b.txt",
            "text/plain",
            12,
            &shared,
        )
        .await
        .unwrap();
        let s1 = attachments::add(
            &store,
            &project,
            &actor,
            &keys[0],
            "c.txt",
            "text/plain",
            9,
            &single,
        )
        .await
        .unwrap();
        // An orphan nobody recorded (an upload whose row never committed), and a crash's leftover.
        let orphan = attachments::write_blob(&data, b"never recorded").unwrap();
        let tmp = attachments::blob_dir(&data).join(".tmp-abc-1-2");
        std::fs::write(&tmp, b"half").unwrap();

        attachments::remove(&store, &project, &actor, true, &keys[0], a1.id)
            .await
            .unwrap();
        attachments::remove(&store, &project, &actor, true, &keys[0], s1.id)
            .await
            .unwrap();

        // Everything is young: nothing goes.
        let hour = Duration::from_secs(3600);
        let r = attachments::collect_garbage(&store, &data, hour)
            .await
            .unwrap();
        assert_eq!(
            r,
            GcReport {
                deleted: 0,
                bytes: 0,
                kept: 4
            },
            "{}",
            db.name()
        );

        for sha in [&shared, &single, &orphan] {
            age(&data, sha, 2 * hour);
        }
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * hour)
            .unwrap();
        // Re-uploading the same bytes freshens the blob, so the sweep spares it even though no
        // row uses it yet.
        assert_eq!(
            attachments::write_blob(&data, b"only once").unwrap(),
            single
        );

        let r = attachments::collect_garbage(&store, &data, hour)
            .await
            .unwrap();
        assert_eq!(
            r.deleted,
            2,
            "{}: the orphan and the temporary file",
            db.name()
        );
        assert!(
            exists(&data, &shared),
            "{}: still used by the second item",
            db.name()
        );
        assert!(
            exists(&data, &single),
            "{}: freshened by the re-upload",
            db.name()
        );
        assert!(!exists(&data, &orphan), "{}", db.name());
        assert!(!tmp.exists(), "{}", db.name());

        // Deleting the item that still uses the shared blob frees it.
        items::delete(&store, &project, &actor, &keys[1])
            .await
            .unwrap();
        let r = attachments::collect_garbage(&store, &data, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            !exists(&data, &shared),
            "{}: item deleted, blob swept",
            db.name()
        );
        assert!(!exists(&data, &single), "{}", db.name());
        assert_eq!(r.deleted, 2, "{}", db.name());
    }
}
