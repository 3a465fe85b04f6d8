//! Test's own migrations (component `test`, tables prefixed `test_`), applied after Build's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "test",
        version: 1,
        name: "results",
        sqlite: include_str!("../migrations/sqlite/0001_results.sql"),
        postgres: include_str!("../migrations/postgres/0001_results.sql"),
    },
    Migration {
        component: "test",
        version: 2,
        name: "history_indexes",
        sqlite: include_str!("../migrations/sqlite/0002_history_indexes.sql"),
        postgres: include_str!("../migrations/postgres/0002_history_indexes.sql"),
    },
    Migration {
        component: "test",
        version: 3,
        name: "bulk_ingest",
        sqlite: include_str!("../migrations/sqlite/0003_bulk_ingest.sql"),
        postgres: include_str!("../migrations/postgres/0003_bulk_ingest.sql"),
    },
    Migration {
        component: "test",
        version: 4,
        name: "history_covering",
        sqlite: include_str!("../migrations/sqlite/0004_history_covering.sql"),
        postgres: include_str!("../migrations/postgres/0004_history_covering.sql"),
    },
    Migration {
        component: "test",
        version: 5,
        name: "history_visibility",
        sqlite: include_str!("../migrations/sqlite/0005_history_visibility.sql"),
        postgres: include_str!("../migrations/postgres/0005_history_visibility.sql"),
    },
];
