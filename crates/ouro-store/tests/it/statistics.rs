//! SQLite's planner statistics reach the read connections (PostgreSQL shares its statistics
//! between backends, so there is nothing to check there).

use ouro_store::testing::{TestDb, open_store};
use ouro_store::{Store, q};

/// The index the read pool's planner picks for a filter on both columns.
async fn chosen_index(store: &Store) -> String {
    let rows = q("EXPLAIN QUERY PLAN SELECT * FROM stat_probe WHERE a = 1 AND b = 1")
        .fetch_all(&mut store.read().await.unwrap())
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.text("detail").unwrap())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fills `stat_probe` with `n` rows: `a` unique when `a_unique`, else `b` unique; the other
/// column takes two values.
async fn fill(store: &Store, n: i64, a_unique: bool) {
    let mut tx = store.begin().await.unwrap();
    q("DELETE FROM stat_probe").execute(&mut tx).await.unwrap();
    let (a, b) = if a_unique {
        ("i", "i % 2")
    } else {
        ("i % 2", "i")
    };
    q(format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1) \
         INSERT INTO stat_probe (a, b) SELECT {a}, {b} FROM s"
    ))
    .bind(n)
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn read_connections_plan_with_the_statistics_of_the_last_analyze() {
    let env = open_store(&TestDb::Sqlite).await;
    let store = &env.store;
    let mut tx = store.begin().await.unwrap();
    for ddl in [
        "CREATE TABLE stat_probe (a BIGINT NOT NULL, b BIGINT NOT NULL)",
        "CREATE INDEX stat_probe_a ON stat_probe (a)",
        "CREATE INDEX stat_probe_b ON stat_probe (b)",
    ] {
        q(ddl).execute(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Statistics of a small table where `b` is the selective column ...
    fill(store, 20, false).await;
    store.refresh_statistics().await.unwrap();
    let first = chosen_index(store).await;
    assert!(first.contains("stat_probe_b"), "{first}");

    // ... then the table grows 100-fold and `a` becomes the selective one. The read connection
    // that planned above must not keep the old numbers.
    fill(store, 2_000, true).await;
    store.refresh_statistics().await.unwrap();
    let after = chosen_index(store).await;
    assert!(after.contains("stat_probe_a"), "{after}");
}
