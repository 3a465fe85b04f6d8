//! What every storage test here starts from: a fresh store with every phase's migrations up to
//! Release's, and optionally the `demo` project.

use ouro_store::{Store, q};

/// Opens `url` with the migrations of every phase up to Release.
pub async fn open_store(url: &str) -> Store {
    let migrations = [
        ouro_store::PLATFORM_MIGRATIONS,
        ouro_plan::MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
        ouro_test::MIGRATIONS,
        ouro_release::MIGRATIONS,
    ]
    .concat();
    Store::open(url, &migrations).await.unwrap()
}

/// [`open_store`] plus a committed private project `demo`; returns the store and its id.
pub async fn store_with_project(url: &str) -> (Store, i64) {
    let store = open_store(url).await;
    let mut tx = store.begin().await.unwrap();
    let project = q(
        "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
         VALUES ('demo', 'Demo', '', 'private', 1, 1) RETURNING id",
    )
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    tx.commit().await.unwrap();
    (store, project)
}
