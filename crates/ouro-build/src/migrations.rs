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
    Migration {
        component: "build",
        version: 3,
        name: "variables",
        sqlite: include_str!("../migrations/sqlite/0003_variables.sql"),
        postgres: include_str!("../migrations/postgres/0003_variables.sql"),
    },
    Migration {
        component: "build",
        version: 4,
        name: "artifacts",
        sqlite: include_str!("../migrations/sqlite/0004_artifacts.sql"),
        postgres: include_str!("../migrations/postgres/0004_artifacts.sql"),
    },
    Migration {
        component: "build",
        version: 5,
        name: "triggers",
        sqlite: include_str!("../migrations/sqlite/0005_triggers.sql"),
        postgres: include_str!("../migrations/postgres/0005_triggers.sql"),
    },
    Migration {
        component: "build",
        version: 8,
        name: "faults",
        sqlite: include_str!("../migrations/sqlite/0008_faults.sql"),
        postgres: include_str!("../migrations/postgres/0008_faults.sql"),
    },
    Migration {
        component: "build",
        version: 9,
        name: "blob_pins",
        sqlite: include_str!("../migrations/sqlite/0009_blob_pins.sql"),
        postgres: include_str!("../migrations/postgres/0009_blob_pins.sql"),
    },
    Migration {
        component: "build",
        version: 10,
        name: "policies",
        sqlite: include_str!("../migrations/sqlite/0010_policies.sql"),
        postgres: include_str!("../migrations/postgres/0010_policies.sql"),
    },
    Migration {
        component: "build",
        version: 11,
        name: "executor",
        sqlite: include_str!("../migrations/sqlite/0011_executor.sql"),
        postgres: include_str!("../migrations/postgres/0011_executor.sql"),
    },
];
