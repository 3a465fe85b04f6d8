//! Release's own migrations (component `release`, tables prefixed `release_`), applied after Test's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "release",
        version: 1,
        name: "releases",
        sqlite: include_str!("../migrations/sqlite/0001_releases.sql"),
        postgres: include_str!("../migrations/postgres/0001_releases.sql"),
    },
    // 0002 is the release storage's (another branch); numbers are per component.
    Migration {
        component: "release",
        version: 3,
        name: "settings",
        sqlite: include_str!("../migrations/sqlite/0003_settings.sql"),
        postgres: include_str!("../migrations/postgres/0003_settings.sql"),
    },
];
