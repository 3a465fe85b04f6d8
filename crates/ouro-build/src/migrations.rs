//! Build's own migrations (component `build`, tables prefixed `build_`), applied after Code's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "build",
        version: 1,
        name: "runs",
        sqlite: include_str!("../migrations/sqlite/0001_runs.sql"),
        postgres: include_str!("../migrations/postgres/0001_runs.sql"),
    },
    Migration {
        component: "build",
        version: 2,
        name: "runners",
        sqlite: include_str!("../migrations/sqlite/0002_runners.sql"),
        postgres: include_str!("../migrations/postgres/0002_runners.sql"),
    },
];
