//! The release tables apply on both databases after every earlier phase, and a version is unique
//! per project.

use ouro_store::q;
use ouro_store::testing::backends;

#[tokio::test]
async fn migrations_apply_and_versions_are_unique_per_project() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = db.fresh_url(dir.path()).await;
        let (store, project) = crate::support::store_with_project(&url).await;
        let mut tx = store.begin().await.unwrap();
        let insert = "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, created_at) \
                      VALUES ($1, 1, '1.0.0', 'v1.0.0', 'abc', 'draft', '', 1)";
        q(insert).bind(project).execute(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let dup = q(insert).bind(project).execute(&mut tx).await;
        assert!(
            dup.is_err(),
            "{}: a second 1.0.0 in one project must be refused",
            db.name()
        );
    }
}
